"""Which byte ranges to load next: pure functions of file facts, ledger ranges and the cursor.

`plan_reads` says what is new in each file (ingest and the sensor); `plan_requests` adds the
sensor's policy (ranges in flight, stale requests retried, holes behind loaded ranges) and
`hole_run_key` the retry policy of a hole. Then `split_range` cuts each range at day boundaries
(lines are time-ordered: a binary search on line timestamps finds the first line of the next
day, reading a few KiB per probe, never the whole file) and at a size cap, each piece ending at
a newline: the only part that reads the files.
"""

import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xray_pipeline.core.ingest.files import FileState, open_log
from xray_pipeline.core.ingest.ledger import Range, holes, last_end, missing_ranges

# a requested range that the ledger still lacks after this long is requested again
STALE_AFTER_S = 15 * 60
# runs of a hole's range before the sensor stops requesting it and says so
MAX_HOLE_ATTEMPTS = 5


@dataclass(frozen=True)
class ReadTask:
    """Bytes [start, end) of a file to load (end is where the planner saw the file end)."""

    path: Path
    identity: str
    start: int
    end: int | None
    compressed: bool = False


def new_ranges(loaded: list[Range], size: int, *, from_start: bool) -> list[tuple[int, int | None]]:
    """Byte ranges not yet loaded of a file of `size` bytes (-1: unknown, a .gz archive):
    after the last loaded byte, or, `from_start`, every hole from 0 as well."""
    if size == 0:
        return []
    end_of_file = None if size < 0 else size
    start = 0 if from_start else last_end(loaded)
    if end_of_file is not None and end_of_file <= start:
        return []
    return missing_ranges(loaded, start, end_of_file)


def plan_reads(
    states: list[FileState],
    loaded: dict[str, list[Range]],
    *,
    from_start: bool = False,
    explicit: set[Path] | None = None,
) -> tuple[list[ReadTask], list[str]]:
    """Which byte ranges of which files to load next, and notes on why not.

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
        if state.size >= 0 and ranges and state.size < last_end(ranges):
            notes.append(f"{state.path}: smaller than what was loaded; truncated in place")
            continue
        for start, end in new_ranges(ranges, state.size, from_start=from_start):
            tasks.append(ReadTask(state.path, key, start, end, state.compressed))
    return tasks, notes


@dataclass(frozen=True)
class PlannedRange:
    """A range for one run: bytes [start, end) of `path`, a file of the `watched` live file
    (itself or a rotated copy). `suffix` marks the run key of a retried range."""

    path: Path
    watched: Path
    identity: str
    start: int
    end: int
    suffix: str = ""
    hole: bool = False


def watched_file(path: Path, files: Iterable[Path]) -> Path:
    """The configured file that `path` is, or is a rotated copy of (access.log.1 of
    access.log); `path` itself when none is."""
    files = list(files)
    if path in files:
        return path
    bases = [
        f
        for f in files
        if f.parent == path.parent
        and path.name.startswith(f.name)
        and path.name[len(f.name) : len(f.name) + 1] in {".", "-"}
    ]
    return max(bases, key=lambda f: len(f.name), default=path)


def ordered_states(files: list[Path], states: list[FileState], known: set[str]) -> list[FileState]:
    """Known sources and configured files first: a rotated copy is planned as the source it
    is, never as a new file (see plan_reads)."""
    explicit = set(files)
    is_first = [s.identity.key in known or s.path in explicit for s in states]
    return [s for s, f in zip(states, is_first, strict=True) if f] + [
        s for s, f in zip(states, is_first, strict=True) if not f
    ]


def plan_requests(
    files: list[Path],
    states: list[FileState],
    loaded: dict[str, list[Range]],
    cursor: dict,
    *,
    now: float,
) -> tuple[list[PlannedRange], dict, list[str]]:
    """The sensor's plan: (ranges to request, new cursor, notes) from the configured files,
    the states of them and their rotated copies, the ledger and the cursor.

    The cursor remembers, per source identity, how far runs were requested, so that a range
    in flight is not requested again before its run commits it to the ledger; a request the
    ledger still lacks after STALE_AFTER_S is made again under a new key (`#retryN`). Holes
    behind the last loaded byte (a run that failed while later ones loaded) are planned too,
    marked `hole` (see hole_run_key).
    """
    explicit = set(files)
    tasks, notes = plan_reads(ordered_states(files, states, set(loaded)), loaded, explicit=explicit)
    new_cursor = {k: v for k, v in cursor.items() if now - v.get("at", 0) < STALE_AFTER_S}
    planned: list[PlannedRange] = []
    for state in states:
        if state.compressed:
            continue
        for lo, hi in holes(loaded.get(state.identity.key, [])):
            if hi > state.size:  # truncated in place since: those bytes are gone
                continue
            watched = watched_file(state.path, files)
            planned.append(PlannedRange(state.path, watched, state.identity.key, lo, hi, hole=True))
    state_of = {s.path: s for s in states}
    for task in tasks:
        if task.compressed or task.end is None:
            continue
        loaded_end = last_end(loaded.get(task.identity, []))
        entry = new_cursor.get(task.identity)
        start = task.start
        retry = 0
        if entry is not None:
            if entry["end"] > start and start >= loaded_end:
                start = entry["end"]
            retry = entry.get("retry", 0)
        elif cursor.get(task.identity, {}).get("end", 0) > loaded_end:
            retry = cursor[task.identity].get("retry", 0) + 1  # a stale request: try again
        complete = state_of[task.path].complete_end
        end = task.end if complete is None else min(complete, task.end)
        if end <= start:
            continue
        watched = watched_file(task.path, files)
        suffix = f"#retry{retry}" if retry else ""
        planned.append(PlannedRange(task.path, watched, task.identity, start, end, suffix))
        new_cursor[task.identity] = {"end": end, "at": now, "retry": retry}
    return planned, new_cursor, notes


def hole_run_key(
    run_key: str, lo: int, hi: int, active: list[Range], key_used: Callable[[str], bool]
) -> tuple[str | None, str | None]:
    """The retry policy of a hole [lo, hi): (the run key to request it with, None); or
    (None, None) while a queued or running run of the source covers part of it (`active`:
    their ranges; a run commits chunk by chunk, so a hole trails it until it ends); or
    (None, why) once MAX_HOLE_ATTEMPTS keys were used and the ledger still lacks it.

    The range's own key comes first (when a run of it exists, from before it failed, Dagster
    would skip a new request of that key), then one more key per attempt."""
    if any(start < hi and lo < end for start, end in active):
        return None, None
    keys = [run_key, *(f"{run_key}#hole{n}" for n in range(1, MAX_HOLE_ATTEMPTS))]
    for key in keys:
        if not key_used(key):
            return key, None
    return None, (
        f"bytes {lo}-{hi} are still not loaded after {len(keys)} runs; see those runs' "
        "errors, then `xray-pipeline ingest --from-start` loads them by hand"
    )


# the parser's timestamp token (core/parse/patterns.py TS; a test keeps them the same), here
# without importing the parser: the shipper plans with this module and stays small
_TS_RE = re.compile(rb"(\d{4})/(\d{2})/(\d{2}) \d{2}:\d{2}:\d{2}")
_PROBE = 4096
_MAX_SCAN = 1 << 20  # how far to look for a timestamped line from a probe point


@dataclass(frozen=True)
class RangeRequest:
    """Bytes [start, end) of a file, all of whose records belong to `day` (local date)."""

    path: Path
    identity: str
    start: int
    end: int
    day: dt.date | None

    @property
    def key(self) -> str:
        return f"{self.identity}:{self.start}-{self.end}"


def _line_start_at_or_after(fh: BinaryIO, pos: int, limit: int) -> int:
    """The offset of the first line that starts at or after `pos` (`limit` if none)."""
    if pos <= 0:
        return 0
    fh.seek(pos - 1)
    scanned = 0
    while pos - 1 + scanned < limit:
        block = fh.read(min(_PROBE, limit - (pos - 1) - scanned))
        if not block:
            return limit
        cut = block.find(b"\n")
        if cut >= 0:
            return min(pos - 1 + scanned + cut + 1, limit)
        scanned += len(block)
    return limit


def _day_at(fh: BinaryIO, pos: int, limit: int) -> tuple[dt.date | None, int]:
    """The day of the first timestamped line starting at or after line start `pos`, and that
    line's offset; (None, limit) when there is none before `limit` (or within 1 MiB)."""
    fh.seek(pos)
    offset = pos
    buffer = b""
    while offset < limit and offset - pos < _MAX_SCAN:
        if b"\n" not in buffer:
            more = fh.read(min(_PROBE, limit - offset - len(buffer)))
            if not more:
                break
            buffer += more
            continue
        line, _, buffer = buffer.partition(b"\n")
        match = _TS_RE.search(line)
        if match:
            try:
                return dt.date(*(int(g) for g in match.groups())), offset
            except ValueError:
                pass
        offset += len(line) + 1
    return None, limit


def _last_day(fh: BinaryIO, lo: int, end: int) -> dt.date | None:
    """The day of the last timestamped line among the last _PROBE bytes before `end` (a line
    end) and after line start `lo`; None when none is there."""
    begin = max(lo, end - _PROBE)
    fh.seek(begin)
    lines = fh.read(end - begin).split(b"\n")
    if begin > lo:
        lines = lines[1:]  # the first may be the tail of a longer line
    for line in reversed(lines):
        match = _TS_RE.search(line)
        if match:
            try:
                return dt.date(*(int(g) for g in match.groups()))
            except ValueError:
                continue
    return None


def day_boundaries(fh: BinaryIO, start: int, end: int) -> list[tuple[int, dt.date | None]]:
    """[(offset, day)] where each day's lines begin in [start, end); start is a line start.

    For each day, a binary search over byte positions finds the first line of a later day
    (the predicate "the first timestamped line from here is of a later day" only turns from
    false to true along a time-ordered file). Lines without a timestamp stay with the line
    before them.
    """
    day, _ = _day_at(fh, start, end)
    pieces = [(start, day)]
    lo = start
    while day is not None:
        if _last_day(fh, lo, end) == day:  # the range ends on that day: no later day in it
            break
        lo_pos, hi_pos = lo, end
        while hi_pos - lo_pos > 1:
            mid = (lo_pos + hi_pos) // 2
            probe_day, _ = _day_at(fh, _line_start_at_or_after(fh, mid, end), end)
            if probe_day is not None and probe_day > day:
                hi_pos = mid
            else:
                lo_pos = mid
        if hi_pos >= end:
            break
        next_day, boundary = _day_at(fh, _line_start_at_or_after(fh, hi_pos, end), end)
        if next_day is None or boundary >= end or next_day <= day:
            break
        pieces.append((boundary, next_day))
        day, lo = next_day, boundary
    return pieces


def split_range(
    path: Path, identity: str, start: int, end: int, *, max_bytes: int
) -> list[RangeRequest]:
    """Cut [start, end) of `path` at day boundaries and at `max_bytes`, on line starts."""
    requests: list[RangeRequest] = []
    with open_log(path) as fh:
        bounds = day_boundaries(fh, start, end)
        bounds.append((end, None))
        for (lo, day), (hi, _) in itertools.pairwise(bounds):
            pos = lo
            while pos < hi:
                cut = (
                    hi
                    if hi - pos <= max_bytes
                    else _line_start_at_or_after(fh, pos + max_bytes, hi)
                )
                if cut <= pos:
                    cut = hi
                requests.append(RangeRequest(path, identity, pos, cut, day))
                pos = cut
    return requests


def earliest_day(paths: Iterable[Path]) -> dt.date | None:
    """The day of the first timestamped line among the files (the first MiB of each is looked
    at: logs are time-ordered), None when none has one."""
    days = []
    for path in paths:
        try:
            with open_log(path) as fh:
                day, _ = _day_at(fh, 0, _MAX_SCAN)
        except OSError:
            continue
        if day is not None:
            days.append(day)
    return min(days, default=None)


@dataclass(frozen=True)
class Piece:
    """One day's slice of a planned range, under the partition key of that day."""

    item: PlannedRange
    request: RangeRequest
    partition: str

    @property
    def size(self) -> int:
        return self.request.end - self.request.start


def batch_pieces(
    pieces: list[Piece], busy: set[str], max_bytes: int
) -> tuple[list[list[Piece]], dict[str, int]]:
    """Adaptive batching: (one batch of pieces per partition, where each sources' deferred
    pieces start). A partition with a run queued or starting (`busy`) gets no new run: its
    next run takes, in one go, what arrived meanwhile. Another partition gets one run that
    holds its pieces of every source, in order, up to `max_bytes` (at least one piece); the
    rest waits for a later tick. A source's pieces after a deferred one are deferred too, so
    that what was requested of it is always a prefix of what was planned."""
    batches: dict[str, list[Piece]] = {}
    sizes: dict[str, int] = {}
    deferred: dict[str, int] = {}
    for piece in pieces:
        identity = piece.request.identity
        if identity in deferred:
            continue
        day = piece.partition
        batch = batches.setdefault(day, [])
        fits = not batch or sizes.get(day, 0) + piece.size <= max_bytes
        if day in busy or not fits:
            deferred[identity] = piece.request.start
            continue
        batch.append(piece)
        sizes[day] = sizes.get(day, 0) + piece.size
    return [batch for batch in batches.values() if batch], deferred


def rewind_cursor(
    planned_cursor: dict, cursor: dict, deferred: dict[str, int], requested: set[str]
) -> dict:
    """The cursor after a tick that deferred some pieces: a source whose pieces were partly
    requested is marked in flight up to its first deferred byte; one of which nothing was
    requested keeps the entry it had before the tick."""
    rewound = dict(planned_cursor)
    for identity, start in deferred.items():
        if identity in requested:
            rewound[identity] = {**rewound[identity], "end": start}
        elif identity in cursor:
            rewound[identity] = cursor[identity]
        else:
            rewound.pop(identity, None)
    return rewound
