"""Where parse_chunk's time goes: each stage of a chunk timed on its own, on the parser bench's file.

Stages, each including the ones before it except `split` and `capture`:
- split: the chunk's bytes -> the lines frame (split_lines);
- capture: the fast path's one regex alone on the lines (extract_groups, streaming engine);
- query: the fast path's whole query (row columns, typed timestamps, detour tags);
- frames: the query with the access, dns and rejects frames made in the same call;
- parse_chunk: all of it, from the bytes.
Also a 100-line chunk's parse_chunk (the fixed cost a chunk pays whatever its size). The stages
run interleaved, chunk by chunk, so that the machine's drift hits them alike; the figures are
medians in ms per chunk. With `--threads-too`, the same again in a child process with Polars
on one thread, and how much faster the default thread pool is. Usage:
uv run python bench/parse_stages.py [--batch-mb M] [--chunks K] [--reps R] [--threads-too]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from bench._common import OUT, ensure_log
from xray_pipeline.core import parse as P
from xray_pipeline.core.ingest.files import iter_chunks
from xray_pipeline.settings import ParserSettings

DEFAULT_BATCH_MB = ParserSettings().batch_size / (1024 * 1024)
TIMEZONE = "UTC"


def stages(data: bytes) -> dict[str, Callable[[], object]]:
    lines = P.split_lines(data)
    capture = lines.lazy().select(pl.col("text").str.extract_groups(P.FAST_CAPTURE))
    detours = P.DetourTags()  # as a run's: the chunk's detours learned before timing
    P.parse_chunk(data, timezone=TIMEZONE, detours=detours)
    return {
        "split": lambda: P.split_lines(data),
        "capture": lambda: capture.collect(engine="streaming"),
        "query": lambda: P.fast_query(lines, TIMEZONE, detours).collect(engine="streaming"),
        "frames": lambda: P.classify_chunk(lines, TIMEZONE, detours, frames=True),
        "parse_chunk": lambda: P.parse_chunk(data, timezone=TIMEZONE, detours=detours),
    }


def sample_chunks(path: Path, batch: int, count: int) -> list[bytes]:
    """`count` chunks spread over the file."""
    with path.open("rb") as fh:
        chunks = [chunk for _, chunk in iter_chunks(fh, batch)]
    step = max(len(chunks) // count, 1)
    return chunks[::step][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-mb", type=float, default=DEFAULT_BATCH_MB)
    parser.add_argument("--chunks", type=int, default=8, help="chunks sampled from the file")
    parser.add_argument("--reps", type=int, default=7, help="timed rounds over the chunks")
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument(
        "--threads-too",
        action="store_true",
        help="also run with POLARS_MAX_THREADS=1 in a child and print the speed-up",
    )
    args = parser.parse_args()

    path = ensure_log(OUT / "parse.log", args.lines)
    chunks = sample_chunks(path, int(args.batch_mb * 1024 * 1024), args.chunks)
    lines = sum(P.split_lines(chunk).height for chunk in chunks)
    small = b"".join(chunks[0].splitlines(keepends=True)[:100])
    small_detours = P.DetourTags()  # a run's: the detours known after its first chunk
    timers = [stages(chunk) for chunk in chunks]
    names = list(timers[0])
    times: dict[str, list[float]] = {name: [] for name in [*names, "100 lines"]}
    for timer in timers:  # warm-up: regexes, thread pool, heap
        for run in timer.values():
            run()
    for _ in range(args.reps):
        for timer in timers:
            for name, run in timer.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        P.parse_chunk(small, timezone=TIMEZONE, detours=small_detours)
        times["100 lines"].append(time.perf_counter() - start)

    threads = pl.thread_pool_size()
    whole = statistics.median(times["parse_chunk"])
    print(
        f"{len(chunks)} chunks of {args.batch_mb:g} MB ({lines / len(chunks):,.0f} lines each) "
        f"from {path.name}, {args.reps} rounds, Polars threads: {threads}"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:12s} {median * 1e3:7.2f} ms a chunk  ({median / whole:5.1%} of parse_chunk)"
        )
    print(f"  parse_chunk at this speed: {lines / len(chunks) / whole:,.0f} lines/s")

    if args.threads_too:
        child = [sys.executable, __file__, "--batch-mb", str(args.batch_mb)]
        child += [
            "--chunks",
            str(args.chunks),
            "--reps",
            str(args.reps),
            "--lines",
            str(args.lines),
        ]
        env = {**os.environ, "POLARS_MAX_THREADS": "1"}
        out = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
        print(out, end="")
        one = float(out.split("parse_chunk ")[1].split()[0]) / 1e3
        print(f"{threads} threads against 1: {one / whole:.2f}x faster")


if __name__ == "__main__":
    main()
