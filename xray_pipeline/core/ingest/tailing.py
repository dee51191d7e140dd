"""Whether the sensor starts, keeps or replaces the tail run of the current day: a pure
decision over the active tail runs (their day, whether started, their last heartbeat)."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TailRun:
    """An active tail run as the sensor sees it. `last_beat`: its last heartbeat, else when it
    started, else when it was created (epoch seconds)."""

    run_id: str
    day: str
    started: bool
    last_beat: float


@dataclass(frozen=True)
class TailDecision:
    """The days a live tail run follows (their bytes go to no other run), the runs whose
    process is gone (to fail, with the reason), and whether to start one for today."""

    followed: frozenset[str]
    dead: tuple[tuple[TailRun, str], ...]
    start: bool


def decide_tail(
    runs: Iterable[TailRun],
    *,
    today: str,
    today_has_bytes: bool,
    failed_lately: Callable[[], bool],
    now: float,
    stale_after: float,
) -> TailDecision:
    """A started run whose heartbeat is older than `stale_after` lost its process (killed
    with its machine, or by the OOM killer): it is dead, and no longer follows its day. A tail
    run of today starts when today has new bytes, none follows it, and none failed lately: not
    one found dead now, nor one `failed_lately` says of (asked only then). Meanwhile the day
    goes to ordinary runs: no restart loop."""
    followed: set[str] = set()
    dead: list[tuple[TailRun, str]] = []
    for run in runs:
        silent = now - run.last_beat
        if run.started and silent > stale_after:
            dead.append((run, f"no heartbeat for {silent:.0f} s: its process is gone"))
        else:
            followed.add(run.day)
    died = any(run.day == today for run, _ in dead)
    start = today not in followed and today_has_bytes and not died and not failed_lately()
    if start:
        followed.add(today)
    return TailDecision(frozenset(followed), tuple(dead), start)
