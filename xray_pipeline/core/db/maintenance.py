"""Daily maintenance: the next days' partitions created, raw rows and rollups past their retention
dropped."""

import datetime as dt
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from xray_pipeline.core.db.partitions import ensure_partitions, list_partitions, partition_name
from xray_pipeline.core.db.rollups import ROLLUPS


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rollup_rows_deleted: int = 0
    dns_rows_deleted: int = 0
    rejects_deleted: int = 0


def maintain(
    conn: psycopg.Connection,
    *,
    today: dt.date,
    timezone: str,
    ahead_days: int = 3,
    retention_days: int | None = None,
    rollup_retention_days: int | None = None,
) -> MaintenanceReport:
    """Create the next days' partitions; drop raw data (and rollups) past their retention.

    A partition is detached CONCURRENTLY (no exclusive lock on `logs` for readers) and then
    dropped; `dns_queries` and `rejects` rows older than the cutoff are deleted.
    """
    report = MaintenanceReport()
    conn.commit()
    previous = conn.autocommit
    conn.autocommit = True
    try:
        days = [today + dt.timedelta(days=i) for i in range(ahead_days + 1)]
        report.created = ensure_partitions(conn, days, timezone)
        if retention_days is not None:
            cutoff = today - dt.timedelta(days=retention_days)
            for name, _ in list_partitions(conn):
                try:
                    day = dt.datetime.strptime(name, "logs_%Y_%m_%d").date()
                except ValueError:
                    continue
                if day < cutoff and name == partition_name(day):
                    conn.execute(
                        sql.SQL("ALTER TABLE logs DETACH PARTITION {} CONCURRENTLY").format(
                            sql.Identifier(name)
                        )
                    )
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    report.dropped.append(name)
            lo = conn.execute(
                "SELECT lo FROM xray_day_bounds(%s, %s)", (cutoff, timezone)
            ).fetchone()[0]
            report.dns_rows_deleted = conn.execute(
                "DELETE FROM dns_queries WHERE ts < %s", (lo,)
            ).rowcount
            report.rejects_deleted = conn.execute(
                "DELETE FROM rejects WHERE ts < %s", (lo,)
            ).rowcount
        if rollup_retention_days is not None:
            cutoff = today - dt.timedelta(days=rollup_retention_days)
            for table in ROLLUPS:
                report.rollup_rows_deleted += conn.execute(
                    sql.SQL("DELETE FROM {} WHERE day < %s").format(sql.Identifier(table)),
                    (cutoff,),
                ).rowcount
    finally:
        conn.autocommit = previous
    return report
