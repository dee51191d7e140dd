"""Freshness benchmark: `up` as a user runs it, for minutes, with 1 and with N sources.

For each scenario (default: 1 source at 20 lines/s, and 8 sources at 100 lines/s each, every
source a file of its own with a writer of its own) it runs `xray-pipeline up` with everything on
(API sidecar, rollups, checks) on a fresh database for --minutes, and prints:
- append -> queryable delay (a write counts once the ledger holds its bytes): p50, p95 and max
  over the whole run and over its last 5 minutes (its last half when shorter);
- Dagster runs created per minute (every job's, counted per job), and the most runs of one
  partition (a tail run's: its day) created in one minute;
- the queue depth (runs queued, not started or starting): its maximum in the first and in
  the last 5 minutes (growth means runs pile up faster than they start);
- Dagster event rows per minute;
- the CPU of the whole `up` process tree (runs that ended included) as a share of one core,
  and separately the PostgreSQL processes' (run it on an otherwise idle machine).
`--against REV` runs the same scenarios on that revision (a git worktree with its own
environment) in the same run, and prints the ratios. Usage:
uv run python bench/freshness.py [--minutes 10] [--scenario 1x20 --scenario 8x100]
                                 [--against REV]
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from psycopg import sql

from bench._common import OUT, append_at_rate
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    label: str
    delays: list[tuple[float, float]] = field(default_factory=list)  # (append time, delay)
    unseen: int = 0
    runs_per_min: float = 0.0
    runs_by_job: dict[str, int] = field(default_factory=dict)
    max_runs_partition_min: int = 0
    queue_first: int = 0
    queue_last: int = 0
    events_per_min: float = 0.0
    tree_cpu: float = 0.0
    db_cpu: float = 0.0
    tail_start: float = 0.0

    def window(self, tail: bool) -> list[float]:
        return [d for t, d in self.delays if not tail or t >= self.tail_start]


def tree_cpu_seconds(root: psutil.Process) -> float:
    """CPU seconds of a live process tree, with the children it waited for (ended runs)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def server_cpu_seconds() -> float:
    """CPU seconds of the PostgreSQL processes on this machine (run the bench alone)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "postgres":
                # the server's backends end with their connections: their time is in the
                # children's times of the process that waited for them
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def worktree(rev: str) -> tuple[Path, str]:
    """A checkout of `rev` with its own environment: (its folder, its python)."""
    folder = OUT / f"rev-{rev}"
    if not folder.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
    subprocess.run(["uv", "sync", "--locked", "--compile-bytecode", "--quiet"], cwd=folder,
                   check=True)  # fmt: skip
    return folder, str(folder / ".venv" / "bin" / "python")


def run_scenario(
    label: str, sources: int, rate: float, minutes: float, cwd: Path, python: str, server: str
) -> Result:
    name = f"xray_bench_fresh_{uuid.uuid4().hex[:6]}"
    dagster_db = name + "_dagster"
    with connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    work = OUT / f"freshness-{name}"
    logs = [work / f"node{i}" / "access.log" for i in range(sources)]
    for log in logs:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRAY_", "DAGSTER_"))}
    env.update(
        XRAY_DATABASE_URL=url, XRAY_HOME=str(work / "home"), XRAY_DAGSTER_DATABASE=dagster_db
    )
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    out_path = work / "up.out"
    args = [python, "-m", "xray_pipeline.cli", "up", "--port", str(ports[0]),
            "--api-port", str(ports[1])]  # fmt: skip
    for log in logs:
        args += ["--logfile", str(log)]
    with out_path.open("w") as out:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    result = Result(label)
    appended: list[tuple[float, int, int]] = []  # (time, source, size after the write)
    seen: dict[int, list[tuple[float, int]]] = {i: [] for i in range(sources)}
    queue: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 300
        while "ready:" not in out_path.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"up did not become ready; see {out_path}")
            time.sleep(1)
        top = psutil.Process(proc.pid)
        cpu0, db0, wall0 = tree_cpu_seconds(top), server_cpu_seconds(), time.monotonic()
        storage = with_database(server, dagster_db)
        with connect(storage) as conn:
            events0 = conn.execute("SELECT count(*) FROM event_logs").fetchone()[0]
        index = {str(log): i for i, log in enumerate(logs)}

        def poll() -> None:
            with connect(url) as conn, connect(storage) as dconn:
                while not stop.is_set():
                    rows = conn.execute(
                        "SELECT s.path, max(l.end_offset) FROM ingest_ledger l "
                        "JOIN sources s ON s.id = l.source_id GROUP BY s.path"
                    ).fetchall()
                    conn.commit()
                    now = time.time()
                    for path, end in rows:
                        if path in index:
                            seen[index[path]].append((now, end))
                    depth = dconn.execute(
                        "SELECT count(*) FROM runs WHERE status = ANY(%s)", (list(ACTIVE),)
                    ).fetchone()[0]
                    dconn.commit()
                    queue.append((now, depth))
                    time.sleep(0.25)

        def write(i: int) -> None:
            append_at_rate(
                logs[i], rate=rate, seconds=minutes * 60, stop=stop, seed=100 + i,
                on_write=lambda size: appended.append((time.time(), i, size)),
            )  # fmt: skip

        threads = [threading.Thread(target=poll, daemon=True)]
        threads += [threading.Thread(target=write, args=(i,), daemon=True) for i in range(sources)]
        started_at = time.time()
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join()
        ended_at = time.time()
        cpu1, db1, wall1 = tree_cpu_seconds(top), server_cpu_seconds(), time.monotonic()
        catch_up = time.monotonic() + 120
        while time.monotonic() < catch_up and any(
            not seen[i] or seen[i][-1][1] < max((s for _, j, s in appended if j == i), default=0)
            for i in range(sources)
        ):
            time.sleep(0.5)
        stop.set()
        threads[0].join(timeout=5)
        with connect(storage) as conn:
            events1 = conn.execute("SELECT count(*) FROM event_logs").fetchone()[0]
            # every run, under its partition (a tail run's: its day)
            runs = conn.execute(
                "SELECT extract(epoch FROM r.create_timestamp), "
                "coalesce(r.partition, t.value, ''), r.pipeline_name FROM runs r "
                "LEFT JOIN run_tags t ON t.run_id = r.run_id AND t.key = 'xray/day'"
            ).fetchall()
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    span = (ended_at - started_at) / 60
    tail = min(5.0, span / 2) * 60
    result.tail_start = ended_at - tail
    for t_append, i, size in appended:
        hit = next((t for t, end in seen[i] if end >= size and t >= t_append), None)
        if hit is None:
            result.unseen += 1
        else:
            result.delays.append((t_append, hit - t_append))
    in_run = [(float(t), p, job) for t, p, job in runs if started_at <= float(t) <= ended_at]
    result.runs_per_min = len(in_run) / span
    for _, _, job in in_run:
        result.runs_by_job[job] = result.runs_by_job.get(job, 0) + 1
    per_partition_minute: dict[tuple[str, int], int] = {}
    for t, part, _ in in_run:
        key = (part, int((t - started_at) // 60))
        per_partition_minute[key] = per_partition_minute.get(key, 0) + 1
    result.max_runs_partition_min = max(per_partition_minute.values(), default=0)
    first = [d for t, d in queue if t <= started_at + tail]
    last = [d for t, d in queue if result.tail_start <= t <= ended_at]
    result.queue_first, result.queue_last = max(first, default=0), max(last, default=0)
    result.events_per_min = (events1 - events0) / span
    result.tree_cpu = (cpu1 - cpu0) / (wall1 - wall0)
    result.db_cpu = (db1 - db0) / (wall1 - wall0)
    with connect(server, autocommit=True) as admin:
        for db in (name, dagster_db):
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
    return result


def report(result: Result, sources: int, rate: float) -> None:
    whole, last = result.window(False), result.window(True)
    jobs = ", ".join(f"{job} {n}" for job, n in sorted(result.runs_by_job.items())) or "none"
    print(f"{result.label}: {sources} source(s) x {rate:g} lines/s")
    print(
        f"  append -> queryable: whole run p50 {pct(whole, 0.5):.1f} s, p95 {pct(whole, 0.95):.1f}"
        f" s, max {max(whole, default=float('nan')):.1f} s; last part p50 {pct(last, 0.5):.1f} s,"
        f" p95 {pct(last, 0.95):.1f} s, max {max(last, default=float('nan')):.1f} s"
        + (f"; {result.unseen} writes never seen loaded" if result.unseen else "")
    )
    print(
        f"  runs: {result.runs_per_min:.1f} a minute ({jobs}), at most "
        f"{result.max_runs_partition_min} "
        f"for one partition in a minute; queue depth max {result.queue_first} (first part), "
        f"{result.queue_last} (last part); Dagster events {result.events_per_min:,.0f} a minute"
    )
    print(
        f"  CPU: the up process tree {result.tree_cpu:.0%} of a core; the database server "
        f"{result.db_cpu:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--scenario", action="append", help="SOURCESxRATE, e.g. 1x20 (default: 1x20 and 8x100)"
    )
    parser.add_argument("--against", help="also run the scenarios on this git revision")
    args = parser.parse_args()
    scenarios = [tuple(map(float, s.split("x"))) for s in (args.scenario or ["1x20", "8x100"])]
    server = database_url(load_settings())
    revisions = [("this tree", ROOT, sys.executable)]
    if args.against:
        folder, python = worktree(args.against)
        revisions.append((args.against, folder, python))
    results: dict[tuple[str, int], Result] = {}
    for sources, rate in scenarios:
        for label, cwd, python in revisions:
            result = run_scenario(label, int(sources), rate, args.minutes, cwd, python, server)
            report(result, int(sources), rate)
            results[(label, int(sources))] = result
    for sources, rate in scenarios:
        mine = results[("this tree", int(sources))]
        last = mine.window(True)
        ok = (
            pct(last, 0.95) < 8
            and mine.queue_last <= mine.queue_first
            and mine.max_runs_partition_min <= 4
            and (sources != 1 or mine.tree_cpu < 0.5)
            and not mine.unseen
        )
        print(
            f"targets at {int(sources)}x{rate:g} (p95 < 8 s in the last part, no queue growth, "
            f"<= 4 runs a minute per partition{', tree < 50% of a core' if sources == 1 else ''}"
            f"): {'met' if ok else 'NOT met'}"
        )
        if args.against:
            theirs = results[(args.against, int(sources))]
            print(
                f"  against {args.against}: p95 (last part) {pct(theirs.window(True), 0.95):.1f}"
                f" s -> {pct(last, 0.95):.1f} s; runs a minute {theirs.runs_per_min:.1f} -> "
                f"{mine.runs_per_min:.1f}; tree CPU {theirs.tree_cpu:.0%} -> {mine.tree_cpu:.0%}"
            )


if __name__ == "__main__":
    main()
