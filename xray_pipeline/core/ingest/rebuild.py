"""Rebuild one local day of `logs` (and its dns/reject rows) from the bytes on disk.

The ledger says which byte ranges put rows into the day; each range is read again from its
file (the live file, a rotated copy, or a `.gz` archive, found by the source's fingerprint),
parsed, and the day's rows of the ranges that could be read are replaced in one transaction
(readers see the old day or the new one, never half). Rows of ranges whose bytes are gone are
kept as they are, and the report says so: a rebuild never silently shrinks a day.
"""

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from xray_pipeline.core.db.locks import lock_ledger
from xray_pipeline.core.db.partitions import ensure_partitions
from xray_pipeline.core.ingest.batch import Part, copy_prepared, prepare_batch
from xray_pipeline.core.ingest.files import find_file, iter_chunks, open_log
from xray_pipeline.core.ingest.references import SourceRef
from xray_pipeline.core.parse import DetourTags, ParsedChunk, parse_chunk
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy


@dataclass
class RebuildReport:
    day: dt.date
    ranges: int = 0
    reread: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rows_before: int = 0
    rows_after: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing


def _day_filter(chunk: ParsedChunk, lo: dt.datetime, hi: dt.datetime) -> ParsedChunk:
    zone = zoneinfo.ZoneInfo(chunk.access.schema["ts"].time_zone or "UTC")
    lo, hi = lo.astimezone(zone), hi.astimezone(zone)
    in_day = (pl.col("ts") >= lo) & (pl.col("ts") < hi)
    return ParsedChunk(
        access=chunk.access.filter(in_day),
        dns=chunk.dns.filter(in_day),
        rejects=chunk.rejects.filter(in_day),
        rows=chunk.rows,
        source=chunk.source,
        base_offset=chunk.base_offset,
        end_offset=chunk.end_offset,
    )


def rebuild_day(
    conn: psycopg.Connection,
    day: dt.date,
    *,
    timezone: str,
    batch_size: int,
    node: str | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> RebuildReport:
    """Rebuild the day's rows of every source (of one `node` of a fleet, with `node`)."""
    report = RebuildReport(day)
    lo, hi = conn.execute("SELECT lo, hi FROM xray_day_bounds(%s, %s)", (day, timezone)).fetchone()
    ranges = conn.execute(
        """
        SELECT l.start_offset, l.end_offset, s.id, s.identity, s.path, s.node
        FROM xray_day_ranges(%(day)s, %(tz)s) l JOIN sources s ON s.id = l.source_id
        WHERE %(node)s::text IS NULL OR s.node = %(node)s
        ORDER BY s.id, l.start_offset
        """,
        {"day": day, "tz": timezone, "node": node},
    ).fetchall()
    conn.commit()
    report.ranges = len(ranges)
    report.rows_before = _day_rows(conn, lo, hi)
    ensure_partitions(conn, [day], timezone)
    conn.commit()
    prepared = []
    reread: list[tuple[int, int, int]] = []
    for start, end, source_id, identity, path, node in ranges:
        label = f"{path} bytes {start}-{end}"
        found = find_file(Path(path), identity, min_size=end)
        if found is None:
            report.missing.append(label)
            continue
        source = SourceRef(id=source_id, identity=identity, path=str(found), node=node)
        detours = DetourTags()
        with open_log(found) as fh:
            for offset, chunk in iter_chunks(fh, batch_size, start=start, end=end):
                chunk_rows = parse_chunk(
                    chunk, source=str(found), base_offset=offset, timezone=timezone, detours=detours
                )
                parsed = _day_filter(chunk_rows, lo, hi)
                prepared.append(
                    prepare_batch(conn, [Part(source, parsed)], timezone=timezone, policy=policy)
                )
                conn.commit()
        reread.append((source_id, start, end))
        report.reread.append(f"{label} from {found.name}")
    if reread:
        ranges_of = [list(column) for column in zip(*reread, strict=True)]
        with conn.transaction():
            lock_ledger(conn)
            for table in ("logs", "dns_queries", "rejects"):
                conn.execute(
                    sql.SQL(
                        "DELETE FROM {} t USING unnest(%s::int[], %s::bigint[], %s::bigint[]) "
                        "AS r (source, first, past) WHERE t.ts >= %s AND t.ts < %s "
                        "AND t.source_id = r.source AND t.byte_offset >= r.first "
                        "AND t.byte_offset < r.past"
                    ).format(sql.Identifier(table)),
                    (*ranges_of, lo, hi),
                )
            for item in prepared:
                copy_prepared(conn, item)
            conn.execute(
                "UPDATE ingest_ledger l SET status = 'rebuilt' "
                "FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS r (source, first, past) "
                "WHERE l.source_id = r.source AND l.status = 'loaded' "
                "AND int8range(l.start_offset, l.end_offset) && int8range(r.first, r.past)",
                ranges_of,
            )
    report.rows_after = _day_rows(conn, lo, hi)
    conn.commit()
    return report


def _day_rows(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> int:
    return conn.execute(
        "SELECT (SELECT count(*) FROM logs WHERE ts >= %(lo)s AND ts < %(hi)s) "
        "+ (SELECT count(*) FROM dns_queries WHERE ts >= %(lo)s AND ts < %(hi)s) "
        "+ (SELECT count(*) FROM rejects WHERE ts >= %(lo)s AND ts < %(hi)s)",
        {"lo": lo, "hi": hi},
    ).fetchone()[0]
