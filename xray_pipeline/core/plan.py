"""Pure planning for the sensor: which byte ranges to load next, one day and a capped size each.

Given the files on disk and the ledger's loaded ranges (see ingest.plan_reads), split every
range that is not loaded yet at day boundaries (lines are time-ordered: a binary search on line
timestamps finds the first line of the next day, reading a few KiB per probe, never the whole
file) and at a size cap, each piece ending at a newline.
"""

import datetime as dt
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xray_pipeline.core.parse import TS
from xray_pipeline.core.tail import open_log

_TS_RE = re.compile(rb"(\d{4})/(\d{2})/(\d{2}) \d{2}:\d{2}:\d{2}")
_PROBE = 4096
_MAX_SCAN = 1 << 20  # how far to look for a timestamped line from a probe point

assert TS.startswith(r"\d{4}/\d{2}/\d{2} ")  # the same timestamp token as the parser's


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
