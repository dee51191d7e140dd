"""Bring an archived day back into PostgreSQL: its rows of `logs`, `dns_queries` and `rejects`
replaced by the archive's in one transaction (names resolved to ids again, the reference
values a forget or a privacy apply removed since registered anew). A backfill of a day only in
the archive starts here, then re-reads the bytes still on disk if the operator asks."""

import datetime as dt
import io

import polars as pl
import psycopg
from psycopg import sql

from xray_pipeline.core.archive.read import day_files, scan
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import DNS_QUERIES, LOGS, REJECTS, ArchivedTable
from xray_pipeline.core.archive.write import day_bounds
from xray_pipeline.core.db.partitions import ensure_partitions

_REFERENCES = """
INSERT INTO users (email) SELECT DISTINCT "user" FROM restored WHERE "user" IS NOT NULL
ON CONFLICT (email) DO NOTHING;
INSERT INTO tags (name)
SELECT DISTINCT t FROM restored, unnest(ARRAY[inbound_tag, outbound_tag]) t
WHERE t IS NOT NULL ON CONFLICT (name) DO NOTHING;
INSERT INTO protocols (name)
SELECT DISTINCT p FROM restored, unnest(ARRAY[src_protocol, dest_protocol]) p
WHERE p IS NOT NULL ON CONFLICT (name) DO NOTHING;
INSERT INTO endpoints (host, port) SELECT DISTINCT dest_host, dest_port FROM restored
WHERE dest_host IS NOT NULL ON CONFLICT ON CONSTRAINT endpoints_host_port_key DO NOTHING;
"""
_LOGS = """
INSERT INTO logs (ts, source_id, byte_offset, src_protocol_id, src_ip, src_host, src_port,
                  status, dest_protocol_id, endpoint_id, dest_url, inbound_tag_id,
                  outbound_tag_id, user_id, reason)
SELECT r.ts, r.source_id, r.byte_offset, sp.id, r.src_ip::inet, r.src_host, r.src_port,
       r.status, dp.id, e.id, r.dest_url, ti.id, tout.id, u.id, r.reason
FROM restored r
LEFT JOIN protocols sp ON sp.name = r.src_protocol
LEFT JOIN protocols dp ON dp.name = r.dest_protocol
LEFT JOIN endpoints e ON e.host = r.dest_host AND e.port IS NOT DISTINCT FROM r.dest_port
LEFT JOIN tags ti ON ti.name = r.inbound_tag
LEFT JOIN tags tout ON tout.name = r.outbound_tag
LEFT JOIN users u ON u.email = r."user"
"""
_DNS = """
INSERT INTO dns_queries (ts, source_id, byte_offset, server, status, domain, answers, elapsed,
                         error)
SELECT ts, source_id, byte_offset, server, status, domain,
       CASE WHEN json_typeof(answers::json -> 'answers') = 'array'
            THEN ARRAY(SELECT json_array_elements_text(answers::json -> 'answers')) END,
       make_interval(secs => elapsed / 1000000.0), error
FROM restored
"""
_REJECTS = """
INSERT INTO rejects (ts, source_id, byte_offset, reason, raw)
SELECT ts, source_id, byte_offset, reason, raw FROM restored
"""
_COLUMN_TYPES = {pl.String: "text", pl.Int32: "integer", pl.Int64: "bigint"}


def _temp_table(table: ArchivedTable) -> str:
    columns = []
    for name, dtype in table.schema.items():
        if name == "ts":
            kind = "timestamptz"
        elif name == "elapsed":
            kind = "bigint"  # microseconds
        elif name == "answers":
            kind = "text"  # {"answers": [...]} as JSON
        else:
            kind = _COLUMN_TYPES[dtype]
        columns.append(f'"{name}" {kind}')
    return f"CREATE TEMP TABLE restored ({', '.join(columns)})"


def _as_csv(frame: pl.DataFrame) -> bytes:
    """A frame of the archive as CSV for COPY (a null unquoted, an empty text quoted)."""
    changes = [pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S%.6f+00")]
    if "answers" in frame.columns:
        changes.append(pl.struct("answers").struct.json_encode())
    if "elapsed" in frame.columns:
        changes.append(pl.col("elapsed").dt.total_microseconds())
    buffer = io.BytesIO()
    frame.with_columns(changes).write_csv(buffer, include_header=False)
    return buffer.getvalue()


_INSERTS = {LOGS.name: _REFERENCES + _LOGS, DNS_QUERIES.name: _DNS, REJECTS.name: _REJECTS}


def restore_day(
    conn: psycopg.Connection, store: ArchiveStore, day: dt.date, timezone: str
) -> dict[str, int]:
    """Replace `day`'s rows in PostgreSQL by the archive's, in one transaction (its partition
    created when it was dropped); the rows restored per table."""
    paths = {t.name: day_files(conn, t, [day]) for t in (LOGS, DNS_QUERIES, REJECTS)}
    lo, hi = day_bounds(conn, day, timezone)
    ensure_partitions(conn, [day], timezone)
    conn.commit()
    restored = {}
    with conn.transaction():
        for table in (LOGS, DNS_QUERIES, REJECTS):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE ts >= %s AND ts < %s").format(
                    sql.Identifier(table.name)
                ),
                (lo, hi),
            )
            restored[table.name] = 0
            for path in paths[table.name]:
                frame = scan(store, [path], table).collect()
                conn.execute(_temp_table(table))
                with conn.cursor().copy("COPY restored FROM STDIN (FORMAT csv)") as copy:
                    copy.write(_as_csv(frame))
                for statement in _INSERTS[table.name].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("DROP TABLE restored")
                restored[table.name] += frame.height
    return restored
