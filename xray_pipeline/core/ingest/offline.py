"""The offline buffer: parsed chunks spooled as JSONL segments while PostgreSQL is down.

One segment per chunk: a header line (source identity, path, node, byte range, line count,
time zone) and one JSON object per row. A segment is written to a temporary name, fsynced and
renamed, so a crash leaves a whole segment or none. Replay loads a segment through the same
loader and deletes it only after its transaction committed; the ledger makes a replay of a
range loaded meanwhile a no-op (and loads only the part of a range that is still missing).
A segment that cannot be read whole is moved aside to `corrupt/`, never half-loaded.
"""

import contextlib
import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg

from xray_pipeline.core.ingest.batch import load_chunk
from xray_pipeline.core.ingest.files import fsync_dir
from xray_pipeline.core.ingest.ledger import missing_ranges, source_ranges
from xray_pipeline.core.ingest.load import LoadResult
from xray_pipeline.core.ingest.references import SourceRef, register_source
from xray_pipeline.core.parse import ParsedChunk
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy
from xray_pipeline.core.schema import access_schema, dns_schema, rejects_schema

FORMAT_VERSION = 1
SUFFIX = ".jsonl"


class SpoolFull(RuntimeError):
    """The spool reached its size limit, or its disk is full or cannot be written: ingestion
    pauses (the source still holds the lines)."""


class CorruptSegment(ValueError):
    """A segment that cannot be read whole."""


@dataclass(frozen=True)
class Segment:
    path: Path
    identity: str
    source_path: str
    node: str | None
    start: int
    end: int
    lines: int
    timezone: str
    created: float


# SQLSTATE classes of a server that is away or cannot take work now: connection exceptions
# (08), shutdown and cannot-connect-now (57P), insufficient resources (53: disk full, out of
# memory, too many connections)
_UNAVAILABLE_STATES = ("08", "57P", "53")


def is_unavailable(exc: BaseException) -> bool:
    """PostgreSQL is down, restarting, unreachable, overloaded or read-only: spool and retry
    later. Not an error in the data or the query (a value too long for an index, class 54, is
    also an OperationalError to psycopg): spooling that would only fail again at replay."""
    from xray_pipeline.core.db.connect import DatabaseUnavailable

    if isinstance(exc, DatabaseUnavailable | psycopg.errors.ReadOnlySqlTransaction):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(_UNAVAILABLE_STATES)
    return False


def spool_size(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob(f"*{SUFFIX}")) if spool.exists() else 0


def _name(identity: str, start: int, end: int) -> str:
    key = hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()
    return f"{time.time_ns():020d}-{key}-{start:015d}-{end:015d}{SUFFIX}"


def write_segment(
    spool: Path,
    parsed: ParsedChunk,
    *,
    identity: str,
    source_path: str,
    node: str | None,
    timezone: str,
    max_bytes: int | None = None,
) -> Path:
    """Spool one parsed chunk atomically; raises SpoolFull when the spool is at its limit or
    cannot be written (a full disk: nothing is left of the segment)."""
    try:
        spool.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(spool, exc) from exc
    if max_bytes is not None and spool_size(spool) >= max_bytes:
        raise SpoolFull(
            f"the offline spool {spool} holds {spool_size(spool) / 1e6:,.1f} MB, its limit "
            f"([parser] spool_max_mb); ingestion pauses, the log file still holds the lines"
        )
    header = {
        "version": FORMAT_VERSION,
        "identity": identity,
        "path": source_path,
        "node": node,
        "start": parsed.base_offset,
        "end": parsed.end_offset,
        "lines": parsed.line_count,
        "timezone": timezone,
        "created": time.time(),
    }
    final = spool / _name(identity, parsed.base_offset, parsed.end_offset)
    tmp = final.with_suffix(".tmp")
    try:
        _write_rows(tmp, header, parsed)
        os.replace(tmp, final)
        fsync_dir(spool)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _unwritable(spool, exc) from exc
    return final


def _unwritable(spool: Path, exc: OSError) -> SpoolFull:
    return SpoolFull(
        f"cannot write the offline spool {spool}: {exc.strerror or exc}; ingestion pauses, the "
        "log file still holds the lines. Free space there, or move the spool ([parser] "
        "offline_file)"
    )


def _write_rows(tmp: Path, header: dict, parsed: ParsedChunk) -> None:
    with tmp.open("wb") as fh:
        fh.write((json.dumps(header) + "\n").encode())
        for kind, frame in (("access", parsed.access), ("dns", parsed.dns),
                            ("reject", parsed.rejects)):  # fmt: skip
            if frame.is_empty():
                continue
            rows = frame.with_columns(
                pl.lit(kind).alias("_kind"),
                pl.col("ts").dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
                *([pl.col("elapsed").dt.total_microseconds()] if kind == "dns" else []),
            )
            rows.write_ndjson(fh)
        fh.flush()
        os.fsync(fh.fileno())


def read_header(path: Path) -> Segment:
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        h = json.loads(first)
        return Segment(path, h["identity"], h["path"], h["node"], h["start"], h["end"],
                       h["lines"], h["timezone"], h["created"])  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptSegment(f"{path.name}: unreadable header") from exc


def segments(spool: Path) -> list[Segment]:
    """The waiting segments, oldest first (temporary files of a crashed write are ignored)."""
    if not spool.exists():
        return []
    found = []
    for path in sorted(spool.glob(f"*{SUFFIX}")):
        try:
            found.append(read_header(path))
        except CorruptSegment:
            found.append(Segment(path, "", "", None, 0, 0, 0, "UTC", path.stat().st_mtime))
    return found


def prune_spool(spool: Path, before: float) -> list[Path]:
    """Remove the segments written before `before` (a Unix time): lines at least that old,
    past the raw retention. Returns the removed paths."""
    removed = []
    for seg in segments(spool):
        if seg.created < before:
            seg.path.unlink(missing_ok=True)
            removed.append(seg.path)
    if removed:
        fsync_dir(spool)
    return removed


def spooled_ranges(spool: Path) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges already in the spool, per source identity (so they are not spooled twice)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for seg in segments(spool):
        if seg.identity:
            ranges.setdefault(seg.identity, []).append((seg.start, seg.end))
    return ranges


def read_segment(seg: Segment) -> ParsedChunk:
    """The whole segment as a ParsedChunk; CorruptSegment when any line is damaged."""
    tz = seg.timezone
    frames: dict[str, list[dict]] = {"access": [], "dns": [], "reject": []}
    with seg.path.open("rb") as fh:
        fh.readline()
        for number, raw in enumerate(fh, start=2):
            try:
                record = json.loads(raw)
                frames[record.pop("_kind")].append(record)
            except (ValueError, KeyError) as exc:
                raise CorruptSegment(f"{seg.path.name}: line {number} is damaged") from exc
    total = sum(len(v) for v in frames.values())
    if total != seg.lines:
        raise CorruptSegment(f"{seg.path.name}: {total} rows for {seg.lines} lines")

    def frame(records: list[dict], schema: dict) -> pl.DataFrame:
        # as written: ts as UTC text, elapsed as microseconds
        written = {
            name: pl.String() if name == "ts" else pl.Int64() if name == "elapsed" else dtype
            for name, dtype in schema.items()
        }
        df = (
            pl.from_dicts(records, schema=written, strict=False)
            if records
            else pl.DataFrame(schema=written)
        )
        converted = df.with_columns(
            pl.col("ts")
            .str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC")
            .dt.convert_time_zone(tz),
            *(
                [pl.duration(microseconds=pl.col("elapsed")).alias("elapsed")]
                if "elapsed" in schema
                else []
            ),
        )
        return converted.select(list(schema)).cast(schema)

    return ParsedChunk(
        access=frame(frames["access"], access_schema(tz)),
        dns=frame(frames["dns"], dns_schema(tz)),
        rejects=frame(frames["reject"], rejects_schema(tz)),
        rows=pl.DataFrame({"line_no": list(range(seg.lines))}),
        source=seg.source_path,
        base_offset=seg.start,
        end_offset=seg.end,
    )


def _subset(chunk: ParsedChunk, start: int, end: int, lines: int) -> ParsedChunk:
    inside = (pl.col("byte_offset") >= start) & (pl.col("byte_offset") < end)
    return ParsedChunk(
        access=chunk.access.filter(inside),
        dns=chunk.dns.filter(inside),
        rejects=chunk.rejects.filter(inside),
        rows=pl.DataFrame({"line_no": list(range(lines))}),
        source=chunk.source,
        base_offset=start,
        end_offset=end,
    )


def replay(
    conn: psycopg.Connection,
    spool: Path,
    *,
    run_id: str | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> Iterator[tuple[Segment, list[LoadResult], bool]]:
    """Load the waiting segments in order; yields each segment, its load results, and
    whether it was damaged (moved aside, nothing loaded).

    The parts of a segment's range that the ledger does not hold yet are loaded (all of it,
    normally); the segment file is removed after the commit. Damaged segments go to
    `corrupt/` and raise nothing.
    """
    for seg in segments(spool):
        try:
            if not seg.identity:
                raise CorruptSegment(f"{seg.path.name}: unreadable header")
            chunk = read_segment(seg)
        except FileNotFoundError:
            continue  # a concurrent replay loaded and removed it
        except CorruptSegment:
            aside = spool / "corrupt"
            aside.mkdir(exist_ok=True)
            os.replace(seg.path, aside / seg.path.name)
            yield seg, [], True
            continue
        source: SourceRef = register_source(conn, seg.identity, seg.source_path, seg.node)
        conn.commit()
        results = []
        offsets = pl.concat(
            [chunk.access["byte_offset"], chunk.dns["byte_offset"], chunk.rejects["byte_offset"]]
        )
        loaded = source_ranges(conn, source.id, seg.start, seg.end)
        for lo, hi in missing_ranges(loaded, seg.start, seg.end):
            lines = int(((offsets >= lo) & (offsets < hi)).sum())
            part = _subset(chunk, lo, hi, lines)
            results.append(
                load_chunk(
                    conn,
                    part,
                    source,
                    run_id=run_id,
                    timezone=seg.timezone,
                    status="replayed",
                    policy=policy,
                )
            )
        seg.path.unlink(missing_ok=True)  # a concurrent replay may have taken it
        fsync_dir(spool)
        yield seg, results, False


def oldest_age(spool: Path) -> float | None:
    waiting = segments(spool)
    if not waiting:
        return None
    return max(0.0, time.time() - min(s.created for s in waiting))


def describe(spool: Path) -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for seg in segments(spool):
        rows.append({
            "segment": seg.path.name,
            "source": seg.source_path or "(unreadable)",
            "range": f"{seg.start}-{seg.end}",
            "lines": seg.lines,
            "age_s": round((now - dt.datetime.fromtimestamp(seg.created, dt.UTC)).total_seconds()),
        })  # fmt: skip
    return rows
