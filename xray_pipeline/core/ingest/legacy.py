"""From the original tool's `logs` table (unpartitioned, or its partitioned variant) to ours.

The legacy tables (logs, users, protocols, endpoints, tags, with their indexes, sequences and
partitions) are renamed aside with a `legacy_` prefix in one short transaction, our schema is
created, and the rows are copied day by day, one transaction per day, recorded in
`legacy_migration`: a killed migration resumes at the first day not recorded, and a recorded
day is never copied twice. Each day is verified (row counts) before it is recorded. The
legacy tables are dropped only on request and only when every day verified.
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.partitions import ensure_partitions
from xray_pipeline.core.ingest.references import register_source

LEGACY_TABLES = ("logs", "users", "protocols", "endpoints", "tags")
SOURCE_IDENTITY = "legacy:logs"


class MigrationError(RuntimeError):
    """The migration cannot go on; the message says why and what to do."""


@dataclass
class DayResult:
    day: dt.date
    rows: int
    seconds: float


@dataclass
class MigrationReport:
    layout: str
    days_total: int = 0
    days_done_before: int = 0
    rows_total: int = 0
    days: list[DayResult] = field(default_factory=list)
    dropped_old: bool = False
    dry_run: bool = False


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped",
        (f"public.{table}",),
    ).fetchall()
    return {r[0] for r in rows}


def detect(conn: psycopg.Connection) -> str:
    """`ours`, `legacy` (plain table), `legacy_partitioned`, `in_progress` or `empty`."""
    kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('public.logs')")
    row = kind.fetchone()
    legacy_aside = conn.execute("SELECT to_regclass('public.legacy_logs')").fetchone()[0]
    if row is None:
        return "in_progress" if legacy_aside else "empty"
    columns = _columns(conn, "logs")
    if {"ts", "source_id", "byte_offset"} <= columns:
        return "in_progress" if legacy_aside else "ours"
    if "timestamp" in columns:
        return "legacy_partitioned" if row[0] == "p" else "legacy"
    raise MigrationError(
        "the table `logs` is neither the original tool's nor ours; rename it aside first"
    )


def _rename_aside(conn: psycopg.Connection) -> None:
    """Rename the legacy tables, their partitions, indexes and sequences with `legacy_`."""
    with conn.transaction():
        tables = [
            f"public.{t}"
            for t in LEGACY_TABLES
            if conn.execute("SELECT to_regclass(%s)", (f"public.{t}",)).fetchone()[0]
        ]
        owners = conn.execute(
            "SELECT array_agg(oid) FROM pg_class WHERE oid = ANY(%(t)s::regclass[]) "
            "OR oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY(%(t)s::regclass[]))",
            {"t": tables},
        ).fetchone()[0]
        relations = conn.execute(
            """
            SELECT c.relname, c.relkind FROM pg_class c
            WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%(o)s))
               OR c.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass
                            AND refobjid = ANY(%(o)s) AND deptype IN ('a', 'i'))
                  AND c.relkind = 'S'
               OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY(%(o)s))
            ORDER BY c.relkind DESC
            """,
            {"o": owners},
        ).fetchall()
        kinds = {"i": "INDEX", "I": "INDEX", "S": "SEQUENCE"}
        for name, relkind in relations:
            conn.execute(
                sql.SQL("ALTER " + kinds.get(relkind, "TABLE") + " {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(f"legacy_{name}"[:63])
                )
            )
        for table in tables:
            name = table.removeprefix("public.")
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(f"legacy_{name}")
                )
            )


def _days(conn: psycopg.Connection, timezone: str) -> list[tuple[dt.date, int]]:
    return conn.execute(
        'SELECT ("timestamp" AT TIME ZONE %s)::date AS day, count(*) FROM legacy_logs '
        'WHERE "timestamp" IS NOT NULL GROUP BY 1 ORDER BY 1',
        (timezone,),
    ).fetchall()


def plan(conn: psycopg.Connection, timezone: str) -> MigrationReport:
    """What a migration would do (nothing is changed)."""
    layout = detect(conn)
    report = MigrationReport(layout=layout, dry_run=True)
    if layout in ("legacy", "legacy_partitioned"):
        days = conn.execute(
            'SELECT ("timestamp" AT TIME ZONE %s)::date, count(*) FROM logs '
            'WHERE "timestamp" IS NOT NULL GROUP BY 1 ORDER BY 1',
            (timezone,),
        ).fetchall()
        report.days_total = len(days)
        report.rows_total = sum(n for _, n in days)
    conn.rollback()
    return report


COPY_DAY = """
WITH b AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO logs (ts, source_id, byte_offset, src_ip, src_port, status,
                  dest_protocol_id, endpoint_id, inbound_tag_id, outbound_tag_id, user_id)
SELECT l."timestamp", %(source)s, l.id, l.source_ip, l.source_port,
       CASE WHEN lower(l.action) LIKE 'reject%%' THEN 'rejected' ELSE 'accepted' END,
       p.id, e.id, ti.id, tout.id, u.id
FROM legacy_logs l CROSS JOIN b
LEFT JOIN legacy_protocols lp ON lp.id = l.protocol_id
LEFT JOIN protocols p ON p.name = lp.name
LEFT JOIN legacy_endpoints le ON le.id = l.destination_id
LEFT JOIN endpoints e ON e.host = le.address AND e.port IS NOT DISTINCT FROM l.destination_port
LEFT JOIN legacy_tags lti ON lti.id = l.inbound_tag_id
LEFT JOIN tags ti ON ti.name = lti.name
LEFT JOIN legacy_tags lto ON lto.id = l.outbound_tag_id
LEFT JOIN tags tout ON tout.name = lto.name
LEFT JOIN legacy_users lu ON lu.id = l.user_id
LEFT JOIN users u ON u.email = lu.email
WHERE l."timestamp" >= b.lo AND l."timestamp" < b.hi
"""

DIMS_DAY = """
WITH b AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s)),
day AS (SELECT l.* FROM legacy_logs l, b WHERE l."timestamp" >= b.lo AND l."timestamp" < b.hi),
u AS (INSERT INTO users (email)
      SELECT DISTINCT lu.email FROM day JOIN legacy_users lu ON lu.id = day.user_id
      WHERE lu.email IS NOT NULL ORDER BY 1 ON CONFLICT (email) DO NOTHING RETURNING 1),
p AS (INSERT INTO protocols (name)
      SELECT DISTINCT lp.name FROM day JOIN legacy_protocols lp ON lp.id = day.protocol_id
      WHERE lp.name IS NOT NULL ORDER BY 1 ON CONFLICT (name) DO NOTHING RETURNING 1),
t AS (INSERT INTO tags (name)
      SELECT DISTINCT lt.name FROM day JOIN legacy_tags lt
        ON lt.id IN (day.inbound_tag_id, day.outbound_tag_id)
      WHERE lt.name IS NOT NULL ORDER BY 1 ON CONFLICT (name) DO NOTHING RETURNING 1),
e AS (INSERT INTO endpoints (host, port)
      SELECT DISTINCT le.address, day.destination_port FROM day
      JOIN legacy_endpoints le ON le.id = day.destination_id
      WHERE le.address IS NOT NULL ORDER BY 1, 2
      ON CONFLICT ON CONSTRAINT endpoints_host_port_key DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM p), (SELECT count(*) FROM t),
       (SELECT count(*) FROM e)
"""


def migrate(
    conn: psycopg.Connection,
    *,
    timezone: str,
    batch_days: int = 1,
    drop_old: bool = False,
    on_day: Callable[[DayResult, int, int], None] | None = None,
) -> MigrationReport:
    """Migrate (or resume); `on_day(result, done, total)` after each day is committed."""
    layout = detect(conn)
    conn.rollback()
    report = MigrationReport(layout=layout)
    if layout in ("ours", "empty"):
        apply_migrations(conn)
        conn.commit()
        return report
    if layout in ("legacy", "legacy_partitioned"):
        _rename_aside(conn)
    apply_migrations(conn)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS legacy_migration (day date PRIMARY KEY, rows bigint NOT NULL, "
        "seconds double precision NOT NULL, copied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.commit()
    source = register_source(conn, SOURCE_IDENTITY, "legacy_logs")
    total, max_id = conn.execute(
        "SELECT count(*), coalesce(max(id), 0) FROM legacy_logs"
    ).fetchone()
    conn.execute(
        "INSERT INTO ingest_ledger (source_id, start_offset, end_offset, status, run_id, lines) "
        "VALUES (%s, 0, %s, 'loaded', 'legacy-migration', %s) ON CONFLICT DO NOTHING",
        (source.id, max_id + 1, total),
    )
    conn.commit()
    days = _days(conn, timezone)
    done = {r[0] for r in conn.execute("SELECT day FROM legacy_migration").fetchall()}
    conn.commit()
    report.days_total = len(days)
    report.rows_total = sum(n for _, n in days)
    report.days_done_before = len(done)
    todo = [(d, n) for d, n in days if d not in done]
    finished = len(done)
    for start in range(0, len(todo), max(batch_days, 1)):
        batch = todo[start : start + max(batch_days, 1)]
        with conn.transaction():
            ensure_partitions(conn, [d for d, _ in batch], timezone)
        for day, expected in batch:
            began = time.perf_counter()
            with conn.transaction():
                args = {"day": day, "tz": timezone, "source": source.id}
                conn.execute(DIMS_DAY, args)
                copied = conn.execute(COPY_DAY, args).rowcount
                if copied != expected:
                    raise MigrationError(
                        f"{day}: {expected} legacy rows but {copied} copied; nothing of the "
                        "day was kept, the legacy table is untouched"
                    )
                seconds = time.perf_counter() - began
                conn.execute(
                    "INSERT INTO legacy_migration (day, rows, seconds) VALUES (%s, %s, %s)",
                    (day, copied, seconds),
                )
            result = DayResult(day, copied, seconds)
            report.days.append(result)
            finished += 1
            if on_day is not None:
                on_day(result, finished, len(days))
    undated = conn.execute('SELECT count(*) FROM legacy_logs WHERE "timestamp" IS NULL').fetchone()[
        0
    ]
    conn.commit()
    if drop_old:
        if undated:
            raise MigrationError(
                f"{undated} legacy rows have no timestamp and were not copied; the legacy "
                "tables are kept (look at them in legacy_logs, then drop them by hand)"
            )
        with conn.transaction():
            for table in LEGACY_TABLES:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                    sql.Identifier(f"legacy_{table}")))  # fmt: skip
        report.dropped_old = True
    return report
