"""Helpers shared by the benchmark scripts."""

import datetime as dt
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed():
    box = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def ensure_log(path: Path, lines: int, *, days: int = 1, users: int = 200, seed: int = 42) -> Path:
    """Generate the benchmark log once (the generator's default mix) and reuse it.

    The generator runs in a child process: generating in this one would make it large, and a
    child's peak RSS (RUSAGE_CHILDREN) starts from its parent's size at the fork.
    """
    marker = path.with_suffix(path.suffix + f".{lines}.{days}.{users}.{seed}")
    if path.exists() and marker.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    for other in path.parent.glob(path.name + ".*"):  # the markers of other contents
        other.unlink()
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "generate", "--lines", str(lines),
         "--days", str(days), "--users", str(users), "--seed", str(seed), "--out", str(path)],
        check=True,
    )  # fmt: skip
    marker.touch()
    return path


def append_at_rate(
    log: Path,
    *,
    rate: float,
    seconds: float,
    stop: threading.Event,
    on_write: Callable[[int], None],
    seed: int,
    users: int = 200,
    pool_size: int = 5_000,
) -> None:
    """Append `rate` generated lines a second to `log` (ten writes a second, stamped now in
    UTC, as `up` reads them) for `seconds` or until `stop`; `on_write(size after the write)`."""
    from xray_pipeline.core.synthetic.live import line_pool, stamped

    pool = line_pool(size=pool_size, seed=seed, users=users, other_share=0.15)
    cursor, tick, carry = 0, 0, 0.0
    started = time.monotonic()
    with log.open("ab") as fh:
        while not stop.is_set() and time.monotonic() - started < seconds:
            carry += rate / 10.0
            n = int(carry)
            carry -= n
            if n:
                lines = [pool[(cursor + k) % len(pool)] for k in range(n)]
                cursor += n
                fh.write(stamped(lines, dt.datetime.now(dt.UTC).replace(tzinfo=None)).encode())
                fh.flush()
                on_write(fh.tell())
            tick += 1
            time.sleep(max(0.0, started + tick / 10.0 - time.monotonic()))
