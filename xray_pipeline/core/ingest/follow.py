"""What a tail run loads next: the day's unloaded lines that follow what each source loaded.

A tail run (defs/tail.py) follows one local day: every poll it loads, of every watched file,
the complete lines after the last loaded byte that belong to that day. A source whose next
unloaded lines are of another day (yesterday's last lines, read after midnight) is left to the
sensor's runs of that day: the tail only ever loads a prefix of what is missing, so it never
leaves a hole behind it.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from xray_pipeline.core.ingest.files import FileState
from xray_pipeline.core.ingest.ledger import Range
from xray_pipeline.core.ingest.plan import (
    RangeRequest,
    ordered_states,
    plan_reads,
    split_range,
    watched_file,
)


@dataclass(frozen=True)
class FollowPiece:
    """Bytes [start, end) of `path` (a file of the `watched` live file) for the tail's day."""

    request: RangeRequest
    watched: Path

    @property
    def size(self) -> int:
        return self.request.end - self.request.start


def follow_pieces(
    files: list[Path],
    states: list[FileState],
    loaded: dict[str, list[Range]],
    day: dt.date,
    *,
    max_bytes: int,
) -> tuple[list[FollowPiece], list[str]]:
    """The pieces of `day` to load next, and notes on files left alone.

    `loaded` needs only each source's last range (ledger.last_ranges). Lines without a
    timestamp belong to the day of the lines around them; a range with none at all is the
    day's (it is the newest thing in the file)."""
    tasks, notes = plan_reads(
        ordered_states(files, states, set(loaded)), loaded, explicit=set(files)
    )
    state_of = {s.path: s for s in states}
    pieces: list[FollowPiece] = []
    for task in tasks:
        if task.compressed or task.end is None:
            continue
        complete = state_of[task.path].complete_end
        end = task.end if complete is None else min(complete, task.end)
        if end <= task.start:
            continue
        watched = watched_file(task.path, files)
        for request in split_range(task.path, task.identity, task.start, end, max_bytes=max_bytes):
            if request.day is not None and request.day != day:
                break
            pieces.append(FollowPiece(request, watched))
    return pieces, notes
