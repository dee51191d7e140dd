"""The daily partitions of `logs`: their names, creation and listing."""

import datetime as dt

import psycopg


def partition_name(day: dt.date) -> str:
    return f"logs_{day:%Y_%m_%d}"


def ensure_partitions(conn: psycopg.Connection, days: list[dt.date], timezone: str) -> list[str]:
    """Create the daily `logs` partitions that are missing; returns the names created.

    The bounds are midnight to midnight in `timezone`, the zone of the Xray clock. The SQL
    function creates a standalone table and ATTACHes it, which holds only a SHARE UPDATE
    EXCLUSIVE lock on `logs`, so API readers are not blocked.
    """
    created: list[str] = []
    for day in sorted(set(days)):
        row = conn.execute("SELECT xray_ensure_log_partition(%s, %s)", (day, timezone)).fetchone()
        if row and row[0]:
            created.append(partition_name(day))
    return created


def list_partitions(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(partition name, bound expression) of every `logs` partition, oldest first."""
    rows = conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'logs'
        ORDER BY c.relname
        """
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
