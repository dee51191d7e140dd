"""Generator benchmark: the CPU the demo's generator costs at its rate, against rendering the
lines afresh every tick (how it wrote them before), in the same run.

Each way runs in a child process for --seconds at --rate lines/s, appending to a scratch file;
the child's CPU time (user + system) over its wall time is printed as a share of one core.
Usage: uv run python bench/generator.py [--rate 20] [--seconds 30]
"""

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from xray_pipeline.core.synthetic.generate import GeneratorConfig, build_frame, render
from xray_pipeline.core.synthetic.live import follow


def render_each_tick(out: Path, rate: float, seconds: float) -> None:
    """The baseline: a frame built and rendered for every tick's lines."""
    started, tick, carry = time.monotonic(), 0, 0.0
    with out.open("ab") as fh:
        while time.monotonic() - started < seconds:
            carry += rate / 10.0
            n = int(carry)
            carry -= n
            if n:
                stamps = np.full(n, np.datetime64(dt.datetime.now(), "us"))
                frame = render(build_frame(GeneratorConfig(lines=n, seed=tick), timestamps=stamps))
                fh.write(("\n".join(frame["line"].to_list()) + "\n").encode())
                fh.flush()
            tick += 1
            time.sleep(max(0.0, started + tick / 10.0 - time.monotonic()))


def pooled(out: Path, rate: float, seconds: float) -> None:
    for _ in follow(out, rate=rate, stop_after=seconds):
        pass


def child(way: str, rate: float, seconds: float, queue) -> None:
    out = Path(tempfile.mkdtemp()) / "access.log"
    import xray_pipeline.core.parse  # noqa: F401  (the imports are not the generator's cost)

    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    (pooled if way == "pool" else render_each_tick)(out, rate, seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = out.read_bytes().count(b"\n")
    queue.put((cpu, time.perf_counter() - wall, lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    ctx = get_context("spawn")
    shares = {}
    for way in ("pool", "render"):
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(way, args.rate, args.seconds, queue))
        proc.start()
        cpu, wall, lines = queue.get()
        proc.join()
        shares[way] = cpu / wall
        print(
            f"{'pooled lines (follow)' if way == 'pool' else 'rendered each tick (baseline)':32s}"
            f" {lines:,} lines in {wall:.1f} s, CPU {cpu:.2f} s = {shares[way]:.1%} of a core"
        )
    print(
        f"ratio: the baseline costs {shares['render'] / shares['pool']:.0f}x the CPU; target at "
        f"{args.rate:g} lines/s: about 1% of a core: "
        f"{'met' if shares['pool'] <= 0.015 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
