"""Live synthetic logs: lines from a pool rendered once, stamped with the current time and appended
at a rate (demo, benches)."""

import datetime as dt
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from xray_pipeline.core.synthetic.generate import GeneratorConfig, build_frame, render

# The time every line of a pool is rendered at, replaced by the current time when written.
POOL_TIME = dt.datetime(2000, 1, 1)


_POOL_FULL = POOL_TIME.strftime("%Y/%m/%d %H:%M:%S.%f")


_POOL_SECOND = POOL_TIME.strftime("%Y/%m/%d %H:%M:%S")


def line_pool(*, size: int, seed: int, users: int, other_share: float) -> list[str]:
    """`size` generated lines stamped at POOL_TIME, in the generator's mix of shapes."""
    cfg = GeneratorConfig(lines=size, seed=seed, users=users, other_share=other_share)
    stamps = np.full(size, np.datetime64(POOL_TIME, "us"))
    return render(build_frame(cfg, timestamps=stamps))["line"].to_list()


def stamped(lines: list[str], now: dt.datetime) -> str:
    """The lines of a pool as text, their time (with or without a fraction) set to `now`."""
    text = "\n".join(lines) + "\n"
    full = now.strftime("%Y/%m/%d %H:%M:%S.%f")
    return text.replace(_POOL_FULL, full).replace(_POOL_SECOND, full[:19])


def follow(
    out: Path,
    *,
    rate: float,
    timezone: str = "UTC",
    seed: int = 42,
    users: int = 200,
    other_share: float = 0.15,
    stop_after: float | None = None,
    pool_size: int = 20_000,
) -> Iterator[int]:
    """Append `rate` lines per second stamped with the current time in `timezone`; forever.

    The lines come, in turn, from a pool rendered once (`pool_size` lines of the generator's
    mix): a tick only stamps and writes them, so a slow follow costs next to nothing. Yields
    the number of lines written each tick (so a caller can stop it); `stop_after` seconds ends
    it.
    """
    zone = zoneinfo.ZoneInfo(timezone)
    pool = line_pool(size=pool_size, seed=seed, users=users, other_share=other_share)
    started = time.monotonic()
    tick = 0
    per_tick = max(rate / 10.0, 0.0)
    carry = 0.0
    cursor = 0
    with out.open("ab") as fh:
        while stop_after is None or time.monotonic() - started < stop_after:
            carry += per_tick
            n = int(carry)
            carry -= n
            if n:
                taken = [pool[(cursor + i) % len(pool)] for i in range(n)]
                cursor = (cursor + n) % len(pool)
                fh.write(stamped(taken, dt.datetime.now(zone).replace(tzinfo=None)).encode())
                fh.flush()
            yield n
            tick += 1
            next_tick = started + tick / 10.0
            time.sleep(max(0.0, next_tick - time.monotonic()))
