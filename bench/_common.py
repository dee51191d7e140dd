"""Helpers shared by the benchmark scripts."""

import resource
import subprocess
import sys
import time
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
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "generate", "--lines", str(lines),
         "--days", str(days), "--users", str(users), "--seed", str(seed), "--out", str(path)],
        check=True,
    )  # fmt: skip
    marker.touch()
    return path
