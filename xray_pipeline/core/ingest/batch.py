"""Load the chunks of many sources in one transaction (a poll of every source of a day: a
fleet's nodes and the local files): one pass of reference upserts, one COPY per table, a
ledger row per chunk, written together with the rows. A chunk whose range the ledger already
holds (a retried or concurrent load) is left out and the others load: exactly once, as for a
single chunk (load.py is that case)."""

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import psycopg

from xray_pipeline.core.db.partitions import ensure_partitions
from xray_pipeline.core.ingest.load import (
    DNS_COLUMNS,
    LOGS_COLUMNS,
    REJECT_COLUMNS,
    LoadResult,
    build_log_rows,
    chunk_days,
    copy_csv,
    csv_of,
    dns_rows,
    reject_rows,
)
from xray_pipeline.core.ingest.references import SourceRef
from xray_pipeline.core.parse import ParsedChunk
from xray_pipeline.core.privacy.forget import drop_forgotten, forgotten_keys
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy

TABLES = ("logs", "dns_queries", "rejects")
COLUMNS = (LOGS_COLUMNS, DNS_COLUMNS, REJECT_COLUMNS)


@dataclass(frozen=True)
class Part:
    """One parsed chunk of one source: bytes [parsed.base_offset, parsed.end_offset)."""

    source: SourceRef
    parsed: ParsedChunk

    @property
    def size(self) -> int:
        return self.parsed.end_offset - self.parsed.base_offset


@dataclass
class PreparedBatch:
    """The parts with their erased lines, and the rows of the three tables (ids resolved, the
    index of its part on each row), ready for one COPY each."""

    parts: list[Part]
    erased: list[int]
    logs: pl.DataFrame
    dns: pl.DataFrame
    rejects: pl.DataFrame
    counts: dict[str, int]
    days: list[dt.date]
    seconds: float = 0.0  # spent preparing
    csv: dict[str, bytes] = dataclasses.field(default_factory=dict)  # table -> its COPY data

    def write_csv(self) -> "PreparedBatch":
        """The COPY data of the three tables, written here, before the transaction (in the
        worker that prepares, while the batch before is copied)."""
        self.csv = {
            table: csv_of(frame, names)
            for table, names, frame in zip(TABLES, COLUMNS, self.frames(), strict=True)
        }
        return self

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        return self.logs, self.dns, self.rejects


def _with_ids(frame: pl.DataFrame, source_id: int, part: int) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(source_id, pl.Int64).alias("source_id"), pl.lit(part, pl.Int32).alias("part")
    )


def prepare_batch(
    conn: psycopg.Connection,
    parts: list[Part],
    *,
    timezone: str,
    policy: RowPolicy = DEFAULT_POLICY,
) -> PreparedBatch:
    """Everything the batch's transaction needs, done before it on an autocommitted
    connection (so that it can overlap the previous batch's COPY): the forgotten users'
    lines dropped, the partitions of its days, the reference ids of all its rows in one
    pass. What it writes is idempotent and harmless on its own."""
    began = time.perf_counter()
    forgotten = forgotten_keys(conn)
    kept = [drop_forgotten(conn, part.parsed, forgotten) for part in parts]
    chunks = [(part.source.id, p) for part, (p, _) in zip(parts, kept, strict=True)]
    access = pl.concat(
        [_with_ids(p.access, sid, i) for i, (sid, p) in enumerate(chunks)], how="vertical_relaxed"
    )
    days = chunk_days(access)
    if days:
        ensure_partitions(conn, days, timezone)
    logs, counts = build_log_rows(conn, access, None, policy)
    dns = pl.concat(
        [_with_ids(dns_rows(p.dns, sid), sid, i) for i, (sid, p) in enumerate(chunks)],
        how="vertical_relaxed",
    )
    rejects = pl.concat(
        [_with_ids(reject_rows(p.rejects, sid), sid, i) for i, (sid, p) in enumerate(chunks)],
        how="vertical_relaxed",
    )
    parts = [Part(part.source, p) for part, (p, _) in zip(parts, kept, strict=True)]
    erased = [e for _, e in kept]
    prepared = PreparedBatch(parts, erased, logs, dns, rejects, counts, days).write_csv()
    prepared.seconds = time.perf_counter() - began
    return prepared


_LEDGER = """
INSERT INTO ingest_ledger (source_id, start_offset, end_offset, status, run_id, lines,
    access_rows, dns_rows, reject_rows, first_ts, last_ts, erased, seconds)
SELECT s, a, b, st, r, n, ac, dn, rj, f, l, e, sec FROM unnest(%s::int[], %s::bigint[],
    %s::bigint[], %s::text[], %s::text[], %s::int[], %s::int[], %s::int[], %s::int[],
    %s::timestamptz[], %s::timestamptz[], %s::int[], %s::float8[])
    AS u (s, a, b, st, r, n, ac, dn, rj, f, l, e, sec)
ORDER BY s, a  -- every batch takes its ranges' locks in one order: no deadlock between two
ON CONFLICT DO NOTHING
RETURNING id, source_id, start_offset, end_offset
"""


def _time_span(parsed: ParsedChunk) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The first and last time of a chunk's lines (access, DNS and rejected ones alike)."""
    stamps = [
        stamp
        for frame in (parsed.access, parsed.dns, parsed.rejects)
        for stamp in (frame["ts"].min(), frame["ts"].max())
        if stamp is not None
    ]
    return (min(stamps), max(stamps)) if stamps else (None, None)


def _shares(total: float, weights: list[int]) -> list[float]:
    whole = sum(weights)
    if not whole:
        return [total / max(len(weights), 1)] * len(weights)
    return [total * w / whole for w in weights]


def commit_batch(
    conn: psycopg.Connection,
    prepared: PreparedBatch,
    *,
    run_id: str | None,
    status: str = "loaded",
    before_commit: Callable[[], None] | None = None,
) -> list[LoadResult]:
    """The ledger rows of every part and one COPY per table, in one transaction: the parts the
    ledger took load, all of them or none; a part whose range it held already (or one
    overlapping it) says `already_loaded`. `before_commit` lets tests crash a load there."""
    began = time.perf_counter()
    parts = prepared.parts
    times = [_time_span(p.parsed) for p in parts]
    columns = [
        [p.source.id for p in parts],
        [p.parsed.base_offset for p in parts],
        [p.parsed.end_offset for p in parts],
        [status] * len(parts),
        [run_id] * len(parts),
        [p.parsed.line_count for p in parts],
        [p.parsed.access.height for p in parts],
        [p.parsed.dns.height for p in parts],
        [p.parsed.rejects.height for p in parts],
        [t[0] for t in times],
        [t[1] for t in times],
        prepared.erased,
        _shares(prepared.seconds, [p.parsed.line_count for p in parts]),
    ]
    with conn.transaction():
        rows = conn.execute(_LEDGER, columns).fetchall()
        index = {
            (p.source.id, p.parsed.base_offset, p.parsed.end_offset): i for i, p in enumerate(parts)
        }
        taken = {index[(s, a, b)]: ledger_id for ledger_id, s, a, b in rows}
        if len(taken) < len(parts):  # rare: a retried or concurrent load
            keep = pl.col("part").is_in(list(taken))
            prepared = dataclasses.replace(
                prepared,
                logs=prepared.logs.filter(keep),
                dns=prepared.dns.filter(keep),
                rejects=prepared.rejects.filter(keep),
            ).write_csv()
        copy_prepared(conn, prepared)
        if before_commit is not None:
            before_commit()
        seconds = _shares(time.perf_counter() - began, [p.parsed.line_count for p in parts])
        conn.execute(
            "UPDATE ingest_ledger l SET seconds = l.seconds + u.sec "
            "FROM unnest(%s::bigint[], %s::float8[]) AS u (id, sec) WHERE l.id = u.id",
            (list(taken.values()), [seconds[i] for i in taken]),
        )
    results = []
    for i, (part, (first, last)) in enumerate(zip(parts, times, strict=True)):
        parsed = part.parsed
        result = LoadResult(part.source.path, parsed.base_offset, parsed.end_offset)
        if i not in taken:
            result.already_loaded = True
        else:
            result.ingest_id = taken[i]
            result.lines = parsed.line_count
            result.access_rows = parsed.access.height
            result.dns_rows = parsed.dns.height
            result.reject_rows = parsed.rejects.height
            result.days = chunk_days(parsed.access)
            result.oldest_ts, result.newest_ts = first, last
        results.append(result)
    # the batch's new reference values, once: on its first loaded part
    if first_loaded := next((r for r in results if not r.already_loaded), None):
        for key, value in prepared.counts.items():
            setattr(first_loaded, key, value)
    return results


def copy_prepared(conn: psycopg.Connection, prepared: PreparedBatch) -> None:
    """COPY every row of a prepared batch, without ledger rows (the caller's transaction: a
    day rebuild keeps the ledger as it is)."""
    for table, names in zip(TABLES, COLUMNS, strict=True):
        copy_csv(conn, table, names, prepared.csv[table])


def load_chunk(
    conn: psycopg.Connection,
    parsed: ParsedChunk,
    source: SourceRef,
    *,
    run_id: str | None,
    timezone: str,
    status: str = "loaded",
    before_commit: Callable[[], None] | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> LoadResult:
    """Load `parsed` (the bytes [base_offset, end_offset) of `source`) exactly once, on one
    connection: a batch of one part, prepared, then committed."""
    previous = conn.autocommit
    conn.commit()
    conn.autocommit = True
    try:
        prepared = prepare_batch(conn, [Part(source, parsed)], timezone=timezone, policy=policy)
    finally:
        conn.autocommit = previous
    [result] = commit_batch(
        conn, prepared, run_id=run_id, status=status, before_commit=before_commit
    )
    return result
