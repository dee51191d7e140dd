"""One-shot ingestion: plan what is new in each file, parse and load it chunk by chunk."""

import contextlib
import datetime as dt
import glob
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from loguru import logger

from xray_pipeline.core.load import (
    LoadResult,
    PreparedChunk,
    SourceRef,
    commit_chunk,
    prepare_chunk,
    register_source,
)
from xray_pipeline.core.parse import ParsedChunk, parse_chunk
from xray_pipeline.core.pg import DatabaseUnavailable
from xray_pipeline.core.spool import is_unavailable
from xray_pipeline.core.tail import FileIdentity, identify, iter_chunks, open_log

# spools one parsed chunk of a source and returns the segment's path
Spooler = Callable[[ParsedChunk, SourceRef], Path]


@dataclass(frozen=True)
class FileState:
    """A file on disk as the planner sees it."""

    path: Path
    identity: FileIdentity
    size: int
    compressed: bool = False


@dataclass(frozen=True)
class ReadTask:
    """Bytes [start, end) of a file to load (end is where the planner saw the file end)."""

    path: Path
    identity: str
    start: int
    end: int | None
    compressed: bool = False


def rotated_siblings(path: Path) -> list[Path]:
    """Plain rotated copies of `path` (access.log.1, access.log-20250101), never .gz."""
    siblings = []
    for candidate in path.parent.glob(glob.escape(path.name) + "[.-]*"):
        if candidate.suffix in {".gz", ".bz2", ".xz", ".zst"} or not candidate.is_file():
            continue
        siblings.append(candidate)
    return sorted(siblings)


def expand_paths(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Files named by paths or globs, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        found.extend(Path(m) for m in matches) if matches else found.append(Path(pattern))
    return list(dict.fromkeys(found))


def unreadable_reason(path: Path) -> str | None:
    """Why `path`, which exists, cannot be read as a log, with the fix; None when it can be
    read or does not exist (a log that is not there yet is not an error)."""
    try:
        if path.is_dir():
            return f"{path} is a folder: name the log file itself ([parser] logfile, --logfile)"
        with open_log(path) as fh:
            fh.read(1)
    except FileNotFoundError:
        return None
    except PermissionError:
        return (
            f"{path}: permission denied. Xray creates its log with mode 0600: run the pipeline "
            "as the user Xray runs as, or give this user read access to the file and, for the "
            f"files that rotation creates, a default ACL on its folder (setfacl -d -m "
            f"u:{_user()}:r {path.parent})"
        )
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "<user>"


def file_state(path: Path) -> FileState | None:
    """The state of a readable file, or None when it does not exist, cannot be read (see
    unreadable_reason) or has no full line yet."""
    try:
        identity = identify(path)
    except FileNotFoundError:
        return None
    except OSError:  # a folder, no permission, an I/O error: the callers say which
        return None
    if identity is None:
        return None
    compressed = path.suffix == ".gz"
    size = -1 if compressed else path.stat().st_size
    return FileState(path, identity, size, compressed)


def watched_states(paths: list[Path], *, include_siblings: bool = True) -> list[FileState]:
    """The states of the files and (unless compressed) their rotated siblings."""
    candidates: list[Path] = []
    for path in paths:
        candidates.append(path)
        if include_siblings and path.suffix != ".gz":
            candidates.extend(rotated_siblings(path))
    return [s for s in (file_state(p) for p in dict.fromkeys(candidates)) if s is not None]


def committed_ranges(
    conn: psycopg.Connection, identities: list[str]
) -> dict[str, list[tuple[int, int]]]:
    """The loaded byte ranges per source identity, in order: of these identities, and of any
    source with the same fingerprint (a copy of a known file has another device and inode)."""
    if not identities:
        return {}
    fingerprints = [i.rsplit(":", 1)[-1] for i in identities]
    rows = conn.execute(
        """
        SELECT s.identity, l.start_offset, l.end_offset
        FROM sources s JOIN ingest_ledger l ON l.source_id = s.id
        WHERE s.identity = ANY(%s) OR split_part(s.identity, ':', 3) = ANY(%s)
        ORDER BY s.identity, l.start_offset
        """,
        (identities, fingerprints),
    ).fetchall()
    ranges: dict[str, list[tuple[int, int]]] = {}
    for identity, start, end in rows:
        ranges.setdefault(identity, []).append((start, end))
    return ranges


def gaps(
    ranges: list[tuple[int, int]], size: int, *, from_start: bool
) -> list[tuple[int, int | None]]:
    """Byte ranges not yet loaded: after the last loaded byte, or every hole from 0."""
    if size == 0:
        return []
    end_of_file = None if size < 0 else size
    if not ranges:
        return [(0, end_of_file)]
    last_end = max(end for _, end in ranges)
    holes: list[tuple[int, int | None]] = []
    if from_start:
        cursor = 0
        for start, end in sorted(ranges):
            if start > cursor:
                holes.append((cursor, start))
            cursor = max(cursor, end)
    if size < 0 or size > last_end:
        holes.append((last_end, end_of_file))
    return holes


def plan_reads(
    states: list[FileState],
    loaded: dict[str, list[tuple[int, int]]],
    *,
    from_start: bool = False,
    explicit: set[Path] | None = None,
) -> tuple[list[ReadTask], list[str]]:
    """Pure planning: which byte ranges of which files to load next, and notes on why not.

    A rotated sibling is read only when its identity is already known (Xray may still write
    to a renamed file until an idle minute): it is never mistaken for the live file. A file
    named explicitly (`explicit`) is read even when unknown.
    """
    tasks: list[ReadTask] = []
    notes: list[str] = []
    seen: set[str] = set()
    by_fingerprint = {k.rsplit(":", 1)[-1]: k for k in loaded}
    for state in states:
        key = state.identity.key
        live = explicit is None or state.path in explicit
        if key not in loaded and state.identity.fingerprint in by_fingerprint:
            # a copy of a known file (copytruncate's `.1`, a `.gz` archive of it): the same
            # bytes at the same offsets, another inode: it is that source
            key = by_fingerprint[state.identity.fingerprint]
        if key in seen:
            continue
        seen.add(key)
        known = key in loaded
        if not known and not live:
            continue
        ranges = loaded.get(key, [])
        if state.size >= 0 and ranges and state.size < max(end for _, end in ranges):
            notes.append(f"{state.path}: smaller than what was loaded; truncated in place")
            continue
        for start, end in gaps(ranges, state.size, from_start=from_start):
            tasks.append(ReadTask(state.path, key, start, end, state.compressed))
    return tasks, notes


@dataclass
class RunStats:
    """Per-run statistics, exported as a JSON line or a CSV row."""

    run_id: str
    mode: str = "online"
    started: str = ""
    finished: str = ""
    duration_s: float = 0.0
    source: str = ""
    bytes: int = 0
    lines: int = 0
    access_rows: int = 0
    dns_rows: int = 0
    rejects: int = 0
    new_users: int = 0
    new_endpoints: int = 0
    new_protocols: int = 0
    new_tags: int = 0
    lines_per_s: float = 0.0
    days_touched: list[str] = field(default_factory=list)
    chunks: int = 0
    chunks_already_loaded: int = 0
    spooled_chunks: int = 0
    spooled_lines: int = 0
    spool: str = ""
    newest_ts: dt.datetime | None = field(default=None, repr=False)

    def spooled(self, segment: Path) -> None:
        header = json.loads(segment.open("rb").readline())
        self.mode = "offline"
        self.spool = str(segment.parent)
        self.spooled_chunks += 1
        self.spooled_lines += header["lines"]
        self.bytes += header["end"] - header["start"]

    def add(self, result: LoadResult) -> None:
        self.chunks += 1
        if result.already_loaded:
            self.chunks_already_loaded += 1
            return
        self.bytes += result.bytes
        for name in (
            "lines",
            "access_rows",
            "dns_rows",
            "new_users",
            "new_endpoints",
            "new_protocols",
            "new_tags",
        ):
            setattr(self, name, getattr(self, name) + getattr(result, name))
        self.rejects += result.reject_rows
        if result.newest_ts is not None:
            self.newest_ts = max(self.newest_ts or result.newest_ts, result.newest_ts)
        days = set(self.days_touched) | {d.isoformat() for d in result.days}
        self.days_touched = sorted(days)

    def as_dict(self) -> dict:
        record = asdict(self)
        record.pop("newest_ts")
        return record


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _lock_key(identity: str) -> str:
    return f"xray-ingest:{identity}"


def ingest_files(
    conn: psycopg.Connection,
    paths: list[Path],
    *,
    timezone: str,
    batch_size: int,
    node: str | None = None,
    from_start: bool = False,
    run_id: str | None = None,
    include_siblings: bool = True,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    spooler: Spooler | None = None,
) -> RunStats:
    """Load what is new in `paths` (and the still-growing rotated copies of known files).

    With a `spooler`, chunks that cannot be loaded because PostgreSQL went away are spooled
    instead (the run's statistics say `mode: offline`)."""
    stats = RunStats(run_id=run_id or uuid.uuid4().hex, started=_now())
    started = time.perf_counter()
    explicit = set(paths)
    states = watched_states(paths, include_siblings=include_siblings)
    for path in paths:  # an unreadable one is skipped: the caller says why (unreadable_reason)
        if unreadable_reason(path) is None and not path.exists():
            logger.warning("{} does not exist (yet); nothing to read there", path)
    loaded = committed_ranges(conn, [s.identity.key for s in states])
    conn.commit()
    tasks, notes = plan_reads(states, loaded, from_start=from_start, explicit=explicit)
    for note in notes:
        logger.warning(note)
    if on_total is not None:
        on_total(sum((t.end or 0) - t.start for t in tasks))
    stats.source = ",".join(sorted({str(t.path) for t in tasks})) or ",".join(map(str, paths))
    for task in tasks:
        source = register_source(conn, task.identity, str(task.path), node)
        conn.commit()
        got_lock = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_lock_key(task.identity),)
        ).fetchone()[0]
        conn.commit()
        if not got_lock:
            logger.warning("another ingest is loading {}; leaving it to that one", task.path)
            continue
        try:
            for result in _load_task(
                conn,
                task,
                source,
                timezone=timezone,
                batch_size=batch_size,
                run_id=stats.run_id,
                before_commit=before_commit,
                spooler=spooler,
            ):
                if isinstance(result, Path):
                    stats.spooled(result)
                    continue
                stats.add(result)
                if on_progress is not None:
                    on_progress(result.bytes)
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                    (_lock_key(task.identity),),
                )
                conn.commit()
    stats.finished = _now()
    stats.duration_s = round(time.perf_counter() - started, 3)
    stats.lines_per_s = round(stats.lines / stats.duration_s, 1) if stats.duration_s else 0.0
    return stats


def _prepared_chunks(
    conn_info: str, task: ReadTask, source: SourceRef, *, timezone: str, batch_size: int
) -> Iterator[tuple[ParsedChunk, PreparedChunk | None]]:
    """Read, parse and prepare the task's chunks in a worker with its own connection, one
    chunk ahead of the caller, so that preparing chunk N+1 overlaps the COPY of chunk N.

    When PostgreSQL cannot be reached, the chunk comes without its preparation (None), and
    so do the ones after it: the caller spools them."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        state: dict = {"conn": None, "offline": False}

        def prepare(offset: int, chunk: bytes) -> tuple[ParsedChunk, PreparedChunk | None]:
            parsed = parse_chunk(
                chunk, source=str(task.path), base_offset=offset, timezone=timezone
            )
            if state["offline"]:
                return parsed, None
            try:
                if state["conn"] is None:
                    state["conn"] = psycopg.connect(conn_info, autocommit=True, connect_timeout=5)
                return parsed, prepare_chunk(state["conn"], parsed, source, timezone=timezone)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                state["offline"] = True
                return parsed, None

        try:
            with open_log(task.path) as fh:
                pending = None
                for offset, chunk in iter_chunks(
                    fh, batch_size, start=task.start, end=task.end, partial_tail=False
                ):
                    future = pool.submit(prepare, offset, chunk)
                    if pending is not None:
                        yield pending.result()
                    pending = future
                if pending is not None:
                    yield pending.result()
        finally:
            if state["conn"] is not None:
                with contextlib.suppress(Exception):
                    state["conn"].close()


def _load_task(
    conn: psycopg.Connection,
    task: ReadTask,
    source: SourceRef,
    *,
    timezone: str,
    batch_size: int,
    run_id: str,
    before_commit: Callable[[], None] | None,
    spooler: Spooler | None = None,
) -> Iterator[LoadResult | Path]:
    """Load the task's chunks; yields a LoadResult per loaded chunk, or the segment path of
    a chunk spooled because PostgreSQL went away (when a `spooler` is given)."""
    log = logger.bind(source=str(task.path), run_id=run_id)
    offline = False
    for parsed, prepared in _prepared_chunks(
        _conninfo(conn), task, source, timezone=timezone, batch_size=batch_size
    ):
        if not offline and prepared is not None:
            try:
                result = commit_chunk(
                    conn, prepared, source, run_id=run_id, before_commit=before_commit
                )
            except Exception as exc:
                if spooler is None or not is_unavailable(exc):
                    raise
                log.warning("PostgreSQL went away ({}); spooling the rest", str(exc).strip())
                offline = True
            else:
                if result.already_loaded:
                    log.info("bytes {}-{} already loaded", result.start_offset, result.end_offset)
                yield result
                continue
        if spooler is None:
            raise DatabaseUnavailable("PostgreSQL went away during the load")
        offline = True
        yield spooler(parsed, source)


def _conninfo(conn: psycopg.Connection) -> str:
    """A connection string for a second connection to the same database, same credentials."""
    if conn.closed:
        return ""
    params = conn.info.get_parameters()
    password = conn.info.password
    if password:
        params["password"] = password
    return psycopg.conninfo.make_conninfo(**params)


def export_stats(stats: RunStats, output: str, fmt: str) -> None:
    """Append the run's statistics: a JSON line, or a CSV row (header once); `-` = stdout."""
    import csv
    import json
    import sys

    record = stats.as_dict()
    record["days_touched"] = (
        ";".join(record["days_touched"]) if fmt == "csv" else record["days_touched"]
    )
    if output == "-":
        if fmt == "json":
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(record), lineterminator="\n")
            writer.writeheader()
            writer.writerow(record)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        return
    new_file = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(record), lineterminator="\n")
        if new_file:
            writer.writeheader()
        writer.writerow(record)


def spool_files(
    paths: list[Path],
    *,
    spooler: Spooler,
    spooled: dict[str, list[tuple[int, int]]],
    known: dict[str, list[tuple[int, int]]],
    timezone: str,
    batch_size: int,
    node: str | None = None,
    run_id: str | None = None,
) -> RunStats:
    """PostgreSQL is unreachable: parse what is new and spool it, without the database.

    What is new is planned from `known` (the ranges last known to be loaded, kept locally)
    and `spooled` (the ranges already in the spool), so the same bytes are not spooled twice.
    """
    stats = RunStats(run_id=run_id or uuid.uuid4().hex, started=_now(), mode="offline")
    started = time.perf_counter()
    states = watched_states(paths)
    loaded: dict[str, list[tuple[int, int]]] = {}
    for ranges in (known, spooled):
        for key, items in ranges.items():
            loaded.setdefault(key, []).extend(items)
    tasks, notes = plan_reads(states, loaded, explicit=set(paths))
    for note in notes:
        logger.warning(note)
    stats.source = ",".join(sorted({str(t.path) for t in tasks})) or ",".join(map(str, paths))
    for task in tasks:
        source = SourceRef(id=0, identity=task.identity, path=str(task.path), node=node)
        with open_log(task.path) as fh:
            for offset, chunk in iter_chunks(
                fh, batch_size, start=task.start, end=task.end, partial_tail=False
            ):
                parsed = parse_chunk(
                    chunk, source=str(task.path), base_offset=offset, timezone=timezone
                )
                stats.spooled(spooler(parsed, source))
    stats.finished = _now()
    stats.duration_s = round(time.perf_counter() - started, 3)
    return stats


class LocalOffsets:
    """The loaded ranges last seen per source, kept in a small JSON file, so that an ingest
    can plan (and spool) while PostgreSQL is unreachable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, list[tuple[int, int]]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {k: [tuple(r) for r in v] for k, v in data.items()}

    def write(self, ranges: dict[str, list[tuple[int, int]]]) -> None:
        merged: dict[str, list[tuple[int, int]]] = {}
        for key, items in ranges.items():
            merged[key] = [(0, max(end for _, end in items))] if items else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged))
        tmp.replace(self.path)


def remember_offsets(conn: psycopg.Connection, offsets: LocalOffsets) -> None:
    """Refresh the local record from the ledger (the last loaded byte of every source)."""
    rows = conn.execute(
        "SELECT s.identity, max(l.end_offset) FROM sources s "
        "JOIN ingest_ledger l ON l.source_id = s.id GROUP BY s.identity"
    ).fetchall()
    conn.commit()
    offsets.write({identity: [(0, end)] for identity, end in rows})


def complete_end(path: Path, size: int) -> int:
    """The offset just past the last LF before `size` (0 when there is none)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return pos - step + cut + 1
            pos -= step
    return 0


def find_file(path: Path, identity: str, watched: Path | None = None) -> Path | None:
    """The file holding `identity`: `path` itself, or a rotated sibling of it or of the
    `watched` live file (renamed since); a copy with the same fingerprint (copytruncate's
    `.1`) when no file has the identity; else a `.gz` archive of it."""
    candidates = [path, *rotated_siblings(path)]
    if watched is not None:
        candidates += [watched, *rotated_siblings(watched)]
    states = [s for s in (file_state(p) for p in dict.fromkeys(candidates)) if s is not None]
    for state in states:
        if state.identity.key == identity:
            return state.path
    fingerprint = identity.rsplit(":", 1)[-1]
    for state in states:
        if state.identity.fingerprint == fingerprint:
            return state.path
    # last, the compressed archives (logrotate's `compress` without `delaycompress` gzips the
    # renamed file at once): the same bytes, read through gzip
    for base in dict.fromkeys(p for p in (path, watched) if p is not None):
        for archive in sorted(base.parent.glob(glob.escape(base.name) + "[.-]*.gz")):
            state = file_state(archive)
            if state is not None and state.identity.fingerprint == fingerprint:
                return archive
    return None


def load_range(
    conn: psycopg.Connection,
    path: Path,
    identity: str,
    start: int,
    end: int,
    *,
    timezone: str,
    batch_size: int,
    node: str | None = None,
    run_id: str | None = None,
    watched: Path | None = None,
) -> RunStats:
    """Load bytes [start, end) of the file with `identity` (found at `path` or among its
    rotated siblings, or those of the `watched` live file), exactly once."""
    stats = RunStats(run_id=run_id or uuid.uuid4().hex, started=_now(), source=str(path))
    started = time.perf_counter()
    found = find_file(path, identity, watched)
    if found is None:
        raise FileNotFoundError(
            f"no file with identity {identity} at {path} or among its rotated copies"
        )
    source = register_source(conn, identity, str(found), node)
    conn.commit()
    task = ReadTask(found, identity, start, end, found.suffix == ".gz")
    for result in _load_task(
        conn,
        task,
        source,
        timezone=timezone,
        batch_size=batch_size,
        run_id=stats.run_id,
        before_commit=None,
    ):
        stats.add(result)
    stats.source = str(found)
    stats.finished = _now()
    stats.duration_s = round(time.perf_counter() - started, 3)
    stats.lines_per_s = round(stats.lines / stats.duration_s, 1) if stats.duration_s else 0.0
    return stats
