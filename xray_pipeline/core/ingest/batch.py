"""Load the chunks of many sources in one transaction (a poll of every source of a day: a
fleet's nodes and the local files): one pass of reference upserts, one COPY per table, a
ledger row per chunk, written together with the rows. A chunk whose range the ledger already
holds (a retried or concurrent load) is left out and the others load: exactly once, as for a
single chunk (load.py is that case)."""

import dataclasses
import datetime as dt
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
    """The parts with their ingest ids and erased lines, and the rows of the three tables
    (ids resolved, `ingest_id` on each row), ready for one COPY each."""

    parts: list[Part]
    ingest_ids: list[int]
    erased: list[int]
    logs: pl.DataFrame
    dns: pl.DataFrame
    rejects: pl.DataFrame
    counts: dict[str, int]
    days: list[dt.date]
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


def _with_ids(frame: pl.DataFrame, source_id: int, ingest_id: int) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(source_id, pl.Int64).alias("source_id"),
        pl.lit(ingest_id, pl.Int64).alias("ingest_id"),
    )


def prepare_batch(
    conn: psycopg.Connection,
    parts: list[Part],
    *,
    timezone: str,
    policy: RowPolicy = DEFAULT_POLICY,
    ingest_ids: list[int] | None = None,
) -> PreparedBatch:
    """Everything the batch's transaction needs, done before it on an autocommitted
    connection (so that it can overlap the previous batch's COPY): the forgotten users'
    lines dropped, the partitions of its days, an ingest id per part (new ones, or the
    `ingest_ids` of ledger rows that exist: a rebuild), the reference ids of all its rows in
    one pass. What it writes is idempotent and harmless on its own."""
    forgotten = forgotten_keys(conn)
    kept = [drop_forgotten(conn, part.parsed, forgotten) for part in parts]
    ids = ingest_ids or [
        row[0]
        for row in conn.execute(
            "SELECT nextval(pg_get_serial_sequence('ingest_ledger', 'id')) "
            "FROM generate_series(1, %s)",
            (len(parts),),
        )
    ]
    access = pl.concat(
        [
            _with_ids(p.access, part.source.id, i)
            for part, (p, _), i in zip(parts, kept, ids, strict=True)
        ],
        how="vertical_relaxed",
    )
    days = chunk_days(access)
    if days:
        ensure_partitions(conn, days, timezone)
    logs, counts = build_log_rows(conn, access, None, None, policy)
    dns = pl.concat(
        [
            dns_rows(p.dns, part.source.id, i)
            for part, (p, _), i in zip(parts, kept, ids, strict=True)
        ],
        how="vertical_relaxed",
    )
    rejects = pl.concat(
        [
            reject_rows(p.rejects, part.source.id, i)
            for part, (p, _), i in zip(parts, kept, ids, strict=True)
        ],
        how="vertical_relaxed",
    )
    parts = [Part(part.source, p) for part, (p, _) in zip(parts, kept, strict=True)]
    erased = [e for _, e in kept]
    return PreparedBatch(parts, ids, erased, logs, dns, rejects, counts, days).write_csv()


_LEDGER = """
INSERT INTO ingest_ledger (id, source_id, start_offset, end_offset, status, run_id, lines,
    access_rows, dns_rows, reject_rows, first_ts, last_ts, erased)
SELECT * FROM unnest(%s::bigint[], %s::int[], %s::bigint[], %s::bigint[], %s::text[],
    %s::text[], %s::int[], %s::int[], %s::int[], %s::int[], %s::timestamptz[],
    %s::timestamptz[], %s::int[]) AS u
ORDER BY 2, 3  -- every batch takes its ranges' locks in one order: no deadlock between two
ON CONFLICT DO NOTHING
RETURNING id
"""


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
    times = [
        (p.parsed.access["ts"].min(), p.parsed.access["ts"].max())
        if not p.parsed.access.is_empty()
        else (None, None)
        for p in prepared.parts
    ]
    columns = [
        prepared.ingest_ids,
        [p.source.id for p in prepared.parts],
        [p.parsed.base_offset for p in prepared.parts],
        [p.parsed.end_offset for p in prepared.parts],
        [status] * len(prepared.parts),
        [run_id] * len(prepared.parts),
        [p.parsed.line_count for p in prepared.parts],
        [p.parsed.access.height for p in prepared.parts],
        [p.parsed.dns.height for p in prepared.parts],
        [p.parsed.rejects.height for p in prepared.parts],
        [t[0] for t in times],
        [t[1] for t in times],
        prepared.erased,
    ]
    with conn.transaction():
        taken = {row[0] for row in conn.execute(_LEDGER, columns)}
        if len(taken) < len(prepared.parts):  # rare: a retried or concurrent load
            keep = pl.col("ingest_id").is_in(list(taken))
            prepared = dataclasses.replace(
                prepared,
                logs=prepared.logs.filter(keep),
                dns=prepared.dns.filter(keep),
                rejects=prepared.rejects.filter(keep),
            ).write_csv()
        copy_prepared(conn, prepared)
        if before_commit is not None:
            before_commit()
    results = []
    for part, ingest_id, (first, last) in zip(
        prepared.parts, prepared.ingest_ids, times, strict=True
    ):
        parsed = part.parsed
        result = LoadResult(part.source.path, parsed.base_offset, parsed.end_offset)
        if ingest_id not in taken:
            result.already_loaded = True
        else:
            result.ingest_id = ingest_id
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
