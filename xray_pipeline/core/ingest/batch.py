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

import numpy as np
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
from xray_pipeline.core.parse import DetourTags, ParsedChunk, parse_chunk
from xray_pipeline.core.parse.joined import joinable, parse_joined
from xray_pipeline.core.privacy.forget import drop_forgotten_frames, forgotten_keys
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy

TABLES = ("logs", "dns_queries", "rejects")
COLUMNS = (LOGS_COLUMNS, DNS_COLUMNS, REJECT_COLUMNS)


@dataclass(frozen=True)
class Part:
    """One parsed chunk of one source: bytes [parsed.base_offset, parsed.end_offset)."""

    source: SourceRef
    parsed: ParsedChunk


@dataclass(frozen=True)
class Span:
    """The place of one part of a batch: bytes [base_offset, end_offset) of `source`, lines."""

    source: SourceRef
    base_offset: int
    end_offset: int
    lines: int


@dataclass
class Joint:
    """The parsed lines of a batch's parts together: on every row of the three frames its
    `part` (the index of its span) and `source_id`."""

    spans: list[Span]
    access: pl.DataFrame
    dns: pl.DataFrame
    rejects: pl.DataFrame

    @classmethod
    def of_parts(cls, parts: list[Part]) -> "Joint":
        """Parts parsed one by one (a rebuild, a single chunk, a bulk import's chunks)."""

        def joined(name: str) -> pl.DataFrame:
            return pl.concat(
                [
                    getattr(part.parsed, name).with_columns(
                        pl.lit(i, pl.Int32).alias("part"),
                        pl.lit(part.source.id, pl.Int64).alias("source_id"),
                    )
                    for i, part in enumerate(parts)
                ],
                how="vertical_relaxed",
            )

        spans = [
            Span(p.source, p.parsed.base_offset, p.parsed.end_offset, p.parsed.line_count)
            for p in parts
        ]
        return cls(spans, joined("access"), joined("dns"), joined("rejects"))

    @classmethod
    def parse(
        cls,
        chunks: list[tuple[SourceRef, int, bytes]],
        *,
        timezone: str,
        detours: DetourTags,
    ) -> "Joint":
        """Chunks (source, offset, bytes) of many sources parsed at once (`parse_joined`);
        one that does not end at a line end is parsed alone."""
        if not all(joinable(data) for _, _, data in chunks):
            return cls.of_parts(
                [
                    Part(source, parse_chunk(data, source=source.path, base_offset=offset,
                                             timezone=timezone, detours=detours))
                    for source, offset, data in chunks
                ]
            )  # fmt: skip
        parsed = parse_joined(
            [data for _, _, data in chunks],
            [offset for _, offset, _ in chunks],
            timezone=timezone,
            detours=detours,
        )
        ids = pl.Series([source.id for source, _, _ in chunks], dtype=pl.Int64)
        spans = [
            Span(source, offset, offset + len(data), data.count(b"\n"))
            for source, offset, data in chunks
        ]
        return cls(
            spans,
            *(
                frame.with_columns(pl.lit(ids).gather(pl.col("part")).alias("source_id"))
                for frame in (parsed.access, parsed.dns, parsed.rejects)
            ),
        )


def _per_part(frame: pl.DataFrame, parts: int) -> list[int]:
    """How many rows of `frame` each part has."""
    return np.bincount(frame.get_column("part").to_numpy(), minlength=parts).tolist()


@dataclass
class PreparedBatch:
    """The parts' places, what each loads (rows per table, erased lines, first and last
    time, local days), and the rows of the three tables (ids resolved, the index of its part
    on each row), ready for one COPY each."""

    spans: list[Span]
    erased: list[int]
    access_rows: list[int]
    dns_rows: list[int]
    reject_rows: list[int]
    first: list[dt.datetime | None]
    last: list[dt.datetime | None]
    part_days: list[list[dt.date]]
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


def prepare_batch(
    conn: psycopg.Connection,
    parts: list[Part] | Joint,
    *,
    timezone: str,
    policy: RowPolicy = DEFAULT_POLICY,
) -> PreparedBatch:
    """Everything the batch's transaction needs, done before it on an autocommitted
    connection (so that it can overlap the previous batch's COPY): the forgotten users'
    lines dropped, the partitions of its days, the reference ids of all its rows in one
    pass, what each part loads. Every step runs once over the batch's rows, not once a part.
    What it writes is idempotent and harmless on its own."""
    began = time.perf_counter()
    joint = parts if isinstance(parts, Joint) else Joint.of_parts(parts)
    n = len(joint.spans)
    access, rejects = drop_forgotten_frames(joint.access, joint.rejects, forgotten_keys(conn))
    before = np.add(_per_part(joint.access, n), _per_part(joint.rejects, n))
    erased = (before - np.add(_per_part(access, n), _per_part(rejects, n))).tolist()
    days = chunk_days(access)
    if days:
        ensure_partitions(conn, days, timezone)
    logs, counts = build_log_rows(conn, access, None, policy)
    first, last = _time_spans(n, access, joint.dns, rejects)
    by_part = (
        access.group_by("part").agg(pl.col("ts").dt.date().unique().sort().alias("days"))
        if not access.is_empty()
        else pl.DataFrame(schema={"part": pl.Int32, "days": pl.List(pl.Date)})
    )
    part_days: list[list[dt.date]] = [[] for _ in range(n)]
    for part, its_days in by_part.iter_rows():
        part_days[part] = its_days
    prepared = PreparedBatch(
        joint.spans, erased, _per_part(access, n), _per_part(joint.dns, n),
        _per_part(rejects, n), first, last, part_days, logs, dns_rows(joint.dns, None),
        reject_rows(rejects, None), counts, days,
    ).write_csv()  # fmt: skip
    prepared.seconds = time.perf_counter() - began
    return prepared


def _time_spans(n: int, *frames: pl.DataFrame) -> tuple[list, list]:
    """The first and last time of each part's lines (access, DNS and rejected ones alike)."""
    first: list[dt.datetime | None] = [None] * n
    last: list[dt.datetime | None] = [None] * n
    stamps = [f.select("part", "ts") for f in frames if not f.is_empty()]
    if stamps:
        spans = (
            pl.concat(stamps, how="vertical_relaxed")
            .drop_nulls("ts")
            .group_by("part")
            .agg(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
        )
        for part, lo, hi in spans.iter_rows():
            first[part], last[part] = lo, hi
    return first, last


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
    spans = prepared.spans
    lines = [s.lines for s in spans]
    columns = [
        [s.source.id for s in spans],
        [s.base_offset for s in spans],
        [s.end_offset for s in spans],
        [status] * len(spans),
        [run_id] * len(spans),
        lines,
        prepared.access_rows,
        prepared.dns_rows,
        prepared.reject_rows,
        prepared.first,
        prepared.last,
        prepared.erased,
        _shares(prepared.seconds, lines),
    ]
    with conn.transaction():
        rows = conn.execute(_LEDGER, columns).fetchall()
        index = {(s.source.id, s.base_offset, s.end_offset): i for i, s in enumerate(spans)}
        taken = {index[(s, a, b)]: ledger_id for ledger_id, s, a, b in rows}
        if len(taken) < len(spans):  # rare: a retried or concurrent load
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
        seconds = _shares(time.perf_counter() - began, lines)
        conn.execute(
            "UPDATE ingest_ledger l SET seconds = l.seconds + u.sec "
            "FROM unnest(%s::bigint[], %s::float8[]) AS u (id, sec) WHERE l.id = u.id",
            (list(taken.values()), [seconds[i] for i in taken]),
        )
    results = []
    for i, span in enumerate(spans):
        result = LoadResult(span.source.path, span.base_offset, span.end_offset)
        if i not in taken:
            result.already_loaded = True
        else:
            result.ingest_id = taken[i]
            result.lines = span.lines
            result.access_rows = prepared.access_rows[i]
            result.dns_rows = prepared.dns_rows[i]
            result.reject_rows = prepared.reject_rows[i]
            result.days = prepared.part_days[i]
            result.oldest_ts, result.newest_ts = prepared.first[i], prepared.last[i]
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
