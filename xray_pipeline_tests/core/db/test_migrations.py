"""Schema, migrations and the partition helper on a real PostgreSQL."""

import datetime as dt

import psycopg
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations, migrations
from xray_pipeline.core.db.partitions import ensure_partitions, list_partitions

EXPECTED_TABLES = {
    "logs",
    "users",
    "protocols",
    "endpoints",
    "tags",
    "sources",
    "dns_queries",
    "rejects",
    "ingest_ledger",
    "schema_migrations",
}


def test_migrations_apply_once_then_noop(empty_db_url: str):
    with connect(empty_db_url) as conn:
        first = apply_migrations(conn)
        conn.commit()
        assert [m.version for m in first] == [m.version for m in migrations()]
        assert apply_migrations(conn) == []
        # the files themselves are idempotent too: running them again changes nothing
        for migration in migrations():
            conn.execute(migration.path.read_text())
        conn.commit()
        recorded = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        assert recorded == len(migrations())


def test_schema_objects_exist(conn: psycopg.Connection):
    rows = conn.execute(
        "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind IN ('r', 'p')"
    ).fetchall()
    kinds = dict(rows)
    assert set(kinds) >= EXPECTED_TABLES
    assert kinds["logs"] == "p", "logs must be a partitioned table"
    strategy = conn.execute(
        "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'logs'::regclass"
    ).fetchone()[0]
    assert strategy == "r"
    protocols = {r[0] for r in conn.execute("SELECT name FROM protocols").fetchall()}
    assert protocols == {"tcp", "udp", "unix"}


def test_no_default_partition(conn: psycopg.Connection):
    ensure_partitions(conn, [dt.date(2025, 1, 1)], "UTC")
    conn.commit()
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO logs (ts, source_id, byte_offset, status) "
            "VALUES ('2031-01-01T00:00Z', 1, 0, 'accepted')"
        )
    conn.rollback()


@pytest.mark.parametrize(
    ("timezone", "lower", "upper"),
    [
        ("UTC", "2025-11-17 00:00:00+00", "2025-11-18 00:00:00+00"),
        ("Asia/Shanghai", "2025-11-16 16:00:00+00", "2025-11-17 16:00:00+00"),
        ("America/New_York", "2025-11-17 05:00:00+00", "2025-11-18 05:00:00+00"),
    ],
)
def test_partition_bounds_follow_timezone(conn: psycopg.Connection, timezone, lower, upper):
    conn.execute("SET TIME ZONE 'UTC'")
    created = ensure_partitions(conn, [dt.date(2025, 11, 17)], timezone)
    conn.commit()
    assert created == ["logs_2025_11_17"]
    bounds = dict(list_partitions(conn))
    assert bounds["logs_2025_11_17"] == f"FOR VALUES FROM ('{lower}') TO ('{upper}')"
    # twice is harmless
    assert ensure_partitions(conn, [dt.date(2025, 11, 17)], timezone) == []

    # and the partition carries every index of the parent (the partial one included)
    def index_defs(table: str) -> list[str]:
        rows = conn.execute(
            "SELECT regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes "
            "WHERE tablename = %s ORDER BY 1",
            (table,),
        ).fetchall()
        return [r[0] for r in rows]

    parent = index_defs("logs")
    assert len(parent) == 5 and "btree (ts) WHERE (status = 'rejected'::text)" in parent
    assert index_defs("logs_2025_11_17") == parent


def test_partition_accepts_rows_of_its_day_only(conn: psycopg.Connection):
    ensure_partitions(conn, [dt.date(2025, 11, 17)], "Asia/Shanghai")
    conn.execute("INSERT INTO sources (id, identity, path) VALUES (1, 'x', '/x')")
    conn.execute(
        "INSERT INTO logs (ts, source_id, byte_offset, status) "
        "VALUES ('2025-11-17 23:59:59+08', 1, 0, 'accepted')"
    )
    table = conn.execute(
        "SELECT tableoid::regclass::text FROM logs WHERE byte_offset = 0"
    ).fetchone()[0]
    assert table == "logs_2025_11_17"
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO logs (ts, source_id, byte_offset, status) "
            "VALUES ('2025-11-18 00:00:00+08', 1, 1, 'accepted')"
        )
    conn.rollback()


def test_ledger_refuses_double_and_overlapping_ranges(conn: psycopg.Connection):
    conn.execute("INSERT INTO sources (id, identity, path) VALUES (1, 'x', '/x')")
    conn.execute(
        "INSERT INTO ingest_ledger (source_id, start_offset, end_offset) VALUES (1, 0, 100)"
    )
    conn.commit()
    for start, end in [(0, 100), (50, 150), (0, 10)]:
        with pytest.raises(psycopg.errors.IntegrityError):
            conn.execute(
                "INSERT INTO ingest_ledger (source_id, start_offset, end_offset) "
                "VALUES (1, %s, %s)",
                (start, end),
            )
        conn.rollback()
    conn.execute(
        "INSERT INTO ingest_ledger (source_id, start_offset, end_offset) VALUES (1, 100, 200)"
    )
    conn.commit()
