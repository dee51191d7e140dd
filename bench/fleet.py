"""Fleet benchmark: N nodes, each a writer and a real `xray-pipeline ship` process, shipping to
one center (`xray-pipeline up` with everything on, no local log), on this machine.

For each scenario (default 20 nodes x 100 lines/s, then 40 x 100) it runs for --minutes and
prints:
- append -> queryable delay across nodes (a write counts once the ledger holds as many bytes of
  that node as the file had after the write): p50, p95, max, over the run and its last half;
- Dagster runs created per minute (per job) and the most of one partition in a minute;
- the center's CPU (the `up` process tree, runs included, and the PostgreSQL server
  separately) as a share of one core, and its RSS (the tree's sum, sampled, maximum);
- the shippers' CPU and RSS: the busiest one's and the mean, as a share of one core and MB;
then a burst: every node appends --burst lines at once, and the aggregate drain rate (lines a
second from the burst's write to the last of them loaded) as a ratio to `xray-pipeline ingest`
of the same lines from one local file into an empty database, measured in the same run.
Usage:
uv run python bench/fleet.py [--minutes 5] [--scenario 20x100 --scenario 40x100]
                             [--burst 25000]
"""

import argparse
import datetime as dt
import os
import re
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
from bench.freshness import pct, server_cpu_seconds, tree_cpu_seconds
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.core.fleet.nodes import add_node
from xray_pipeline.core.synthetic.live import line_pool, stamped
from xray_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    nodes: int
    rate: float
    delays: list[tuple[float, float]] = field(default_factory=list)  # (append time, delay)
    unseen: int = 0
    half: float = 0.0
    runs_per_min: float = 0.0
    runs_by_job: dict[str, int] = field(default_factory=dict)
    max_runs_partition_min: int = 0
    center_cpu: float = 0.0
    db_cpu: float = 0.0
    center_rss_mb: float = 0.0
    shipper_cpu_max: float = 0.0
    shipper_cpu_mean: float = 0.0
    shipper_rss_max_mb: float = 0.0
    shipper_rss_mean_mb: float = 0.0
    burst_lines: int = 0
    burst_seconds: float = float("nan")
    burst_landed_seconds: float = 0.0
    ingest_lines_per_s: float = float("nan")
    ingest_load_lines_per_s: float = float("nan")

    def window(self, last: bool) -> list[float]:
        return [d for t, d in self.delays if not last or t >= self.half]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_database(server: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, with_database(server, name)


def drop_databases(server: str, *names: str) -> None:
    with connect(server, autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def loaded_by_node(conn) -> dict[str, int]:
    """Bytes loaded per node: every node ships one file from its start, so the loaded bytes of
    its landed segments are the offset reached in its log."""
    rows = conn.execute(
        "SELECT s.node, sum(l.end_offset - l.start_offset)::bigint FROM ingest_ledger l "
        "JOIN sources s ON s.id = l.source_id WHERE s.node IS NOT NULL GROUP BY s.node"
    ).fetchall()
    conn.commit()
    return dict(rows)


def sample(procs: list[psutil.Process]) -> list[tuple[float, float]]:
    """(CPU seconds, RSS MB) of each process (0, 0 once gone)."""
    out = []
    for proc in procs:
        try:
            t = proc.cpu_times()
            out.append((t.user + t.system, proc.memory_info().rss / 1e6))
        except psutil.Error:
            out.append((0.0, 0.0))
    return out


def tree_rss_mb(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss / 1e6
        except psutil.Error:
            continue
    return total


def fleet_setup(server: str, prefix: str, nodes: int):
    """A new database with `nodes` registered nodes, and a folder in bench/out with an empty
    log per node and the center's state folder: (name, url, folder, tokens, logs)."""
    name, url = new_database(server, prefix)
    work = OUT / f"{prefix.removeprefix('xray_bench_')}-{name}"
    (work / "center" / "landed").mkdir(parents=True)
    with connect(url) as conn:
        apply_migrations(conn)
        tokens = {f"node-{i:03d}": add_node(conn, f"node-{i:03d}") for i in range(nodes)}
    logs = {node: work / node / "access.log" for node in tokens}
    for log in logs.values():
        log.parent.mkdir(parents=True)
        log.write_bytes(b"")
    return name, url, work, tokens, logs


def clean_env() -> dict[str, str]:
    """This environment without the XRAY_ and DAGSTER_ variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("XRAY_", "DAGSTER_"))}


def start_center(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int, Path]:
    """`xray-pipeline up` with everything on, its output in work/up.out: (the process, the
    API's port, the output file)."""
    ui_port, api_port = free_port(), free_port()
    out_path = work / "up.out"
    with out_path.open("w") as out:
        center = subprocess.Popen(
            [sys.executable, "-m", "xray_pipeline.cli", "up", "--port", str(ui_port),
             "--api-port", str(api_port)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return center, api_port, out_path


def wait_ready(center: subprocess.Popen, out_path: Path) -> None:
    """Until `up` says ready (its first sensor tick)."""
    deadline = time.monotonic() + 300
    while "ready:" not in out_path.read_text():
        if time.monotonic() > deadline or center.poll() is not None:
            raise SystemExit(f"up did not become ready; see {out_path}")
        time.sleep(1)


def start_shipper(node: str, token: str, log: Path, api_port: int) -> subprocess.Popen:
    """A real `xray-pipeline ship` of `log` as `node`, its output beside the log."""
    env = {**clean_env(), "XRAY_HOME": str(log.parent), "XRAY_SHIP_TOKEN": token}
    args = [sys.executable, "-m", "xray_pipeline.cli", "ship", "--node", node,
            "--central", f"http://127.0.0.1:{api_port}", "--logfile", str(log)]  # fmt: skip
    out = (log.parent / "ship.out").open("w")
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_all(shippers: list[subprocess.Popen], center: subprocess.Popen) -> None:
    """Stop the shippers, then the center (SIGINT, as Ctrl-C)."""
    for proc in shippers:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in shippers:
        proc.wait(timeout=60)
    if center.poll() is None:
        os.killpg(center.pid, signal.SIGINT)
    center.wait(timeout=120)


def run_scenario(nodes: int, rate: float, minutes: float, burst: int, server: str) -> Result:
    name, url, work, tokens, logs = fleet_setup(server, "xray_bench_fleet", nodes)
    dagster_db = name + "_dagster"
    home = work / "center"
    env = {
        **clean_env(),
        "XRAY_DATABASE_URL": url,
        "XRAY_HOME": str(home),
        "XRAY_DAGSTER_DATABASE": dagster_db,
    }
    center, api_port, out_path = start_center(work, env)
    shippers: list[subprocess.Popen] = []
    result = Result(nodes, rate)
    appended: list[tuple[float, str, int]] = []  # (time, node, size after the write)
    seen: dict[str, list[tuple[float, int]]] = {node: [] for node in tokens}
    stop = threading.Event()
    try:
        wait_ready(center, out_path)
        shippers = [start_shipper(n, token, logs[n], api_port) for n, token in tokens.items()]
        time.sleep(5)  # the shippers' imports
        top = psutil.Process(center.pid)
        ship_procs = [psutil.Process(p.pid) for p in shippers]
        cpu0, db0, wall0 = tree_cpu_seconds(top), server_cpu_seconds(), time.monotonic()
        ship0 = sample(ship_procs)
        rss_center: list[float] = []
        rss_ship: list[list[float]] = []

        def poll() -> None:
            with connect(url) as conn:
                while not stop.is_set():
                    now = time.time()
                    for node, end in loaded_by_node(conn).items():
                        seen[node].append((now, end))
                    time.sleep(0.25)

        def watch_memory() -> None:
            while not stop.is_set():
                rss_center.append(tree_rss_mb(top))
                rss_ship.append([rss for _, rss in sample(ship_procs)])
                time.sleep(2)

        def write(i: int, node: str) -> None:
            append_at_rate(
                logs[node], rate=rate, seconds=minutes * 60, stop=stop, seed=100 + i, users=300,
                pool_size=2_000, on_write=lambda size: appended.append((time.time(), node, size)),
            )  # fmt: skip

        watchers = [threading.Thread(target=f, daemon=True) for f in (poll, watch_memory)]
        writers = [
            threading.Thread(target=write, args=(i, node), daemon=True)
            for i, node in enumerate(tokens)
        ]
        started_at = time.time()
        for thread in [*watchers, *writers]:
            thread.start()
        for thread in writers:
            thread.join()
        ended_at = time.time()
        cpu1, db1, wall1 = tree_cpu_seconds(top), server_cpu_seconds(), time.monotonic()
        ship1 = sample(ship_procs)
        final = {node: max((s for _, n, s in appended if n == node), default=0) for node in tokens}
        catch_up = time.monotonic() + 180
        while time.monotonic() < catch_up and any(
            not seen[n] or seen[n][-1][1] < final[n] for n in tokens
        ):
            time.sleep(0.5)
        storage = with_database(server, dagster_db)
        with connect(storage) as conn:
            runs = conn.execute(
                "SELECT extract(epoch FROM r.create_timestamp), "
                "coalesce(r.partition, t.value, ''), r.pipeline_name FROM runs r "
                "LEFT JOIN run_tags t ON t.run_id = r.run_id AND t.key = 'xray/day'"
            ).fetchall()

        # the burst: every node appends a backlog at once; drained when all of it is loaded
        if burst:
            pool = line_pool(size=burst, seed=7, users=300, other_share=0.15)
            text = stamped(pool, dt.datetime.now(dt.UTC).replace(tzinfo=None)).encode()
            with connect(url) as conn:
                before = loaded_by_node(conn)
            t0 = time.time()
            for log in logs.values():
                with log.open("ab") as fh:
                    fh.write(text)
            target = {node: before.get(node, 0) + len(text) for node in tokens}
            sizes = {node: logs[node].stat().st_size for node in tokens}
            with connect(url) as conn:
                while time.time() - t0 < 900:
                    if not result.burst_landed_seconds and all(
                        sum(p.stat().st_size for p in (home / "landed" / n).glob("*.log"))
                        >= sizes[n]
                        for n in tokens
                    ):
                        result.burst_landed_seconds = time.time() - t0
                    done = loaded_by_node(conn)
                    if all(done.get(n, 0) >= target[n] for n in tokens):
                        break
                    time.sleep(0.2)
            result.burst_lines = burst * nodes
            result.burst_seconds = time.time() - t0
            (work / "burst.log").write_bytes(text * nodes)
    finally:
        stop.set()
        stop_all(shippers, center)

    span = (ended_at - started_at) / 60
    result.half = started_at + (ended_at - started_at) / 2
    for t_append, node, size in appended:
        hit = next((t for t, end in seen[node] if end >= size and t >= t_append), None)
        if hit is None:
            result.unseen += 1
        else:
            result.delays.append((t_append, hit - t_append))
    in_run = [(float(t), p, job) for t, p, job in runs if started_at <= float(t) <= ended_at]
    result.runs_per_min = len(in_run) / span
    per_partition_minute: dict[tuple[str, int], int] = {}
    for t, part, job in in_run:
        result.runs_by_job[job] = result.runs_by_job.get(job, 0) + 1
        key = (part, int((t - started_at) // 60))
        per_partition_minute[key] = per_partition_minute.get(key, 0) + 1
    result.max_runs_partition_min = max(per_partition_minute.values(), default=0)
    wall = wall1 - wall0
    result.center_cpu = (cpu1 - cpu0) / wall
    result.db_cpu = (db1 - db0) / wall
    result.center_rss_mb = max(rss_center, default=0.0)
    shares = [(b[0] - a[0]) / wall for a, b in zip(ship0, ship1, strict=True)]
    result.shipper_cpu_max = max(shares)
    result.shipper_cpu_mean = sum(shares) / len(shares)
    per_shipper = [max(col) for col in zip(*rss_ship, strict=True)] if rss_ship else [0.0]
    result.shipper_rss_max_mb = max(per_shipper)
    result.shipper_rss_mean_mb = sum(per_shipper) / len(per_shipper)
    drop_databases(server, name, dagster_db)
    if burst:
        result.ingest_lines_per_s, result.ingest_load_lines_per_s = ingest_rate(
            work / "burst.log", server, result.burst_lines
        )
    return result


def ingest_rate(log: Path, server: str, lines: int) -> tuple[float, float]:
    """`xray-pipeline ingest` of the burst's lines from one local file into an empty database:
    lines a second over the command's wall clock (as the drain counts its whole path, from
    the write), and over the load time the command itself reports."""
    name, url = new_database(server, "xray_bench_fleet_ingest")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRAY_", "DAGSTER_"))}
    env.update(
        XRAY_DATABASE_URL=url,
        XRAY_HOME=str(log.parent / "ingest-home"),
        XRAY_PARSER_TIMEZONE="UTC",
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "ingest", "--logfile", str(log)],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.monotonic() - started
    reported = float(re.search(r" in ([0-9.]+) s", done.stderr + done.stdout).group(1))
    drop_databases(server, name)
    return lines / seconds, lines / reported


def report(result: Result) -> None:
    whole, last = result.window(False), result.window(True)
    jobs = ", ".join(f"{job} {n}" for job, n in sorted(result.runs_by_job.items())) or "none"
    print(f"{result.nodes} nodes x {result.rate:g} lines/s:")
    print(
        f"  append -> queryable across nodes: p50 {pct(whole, 0.5):.1f} s, p95 "
        f"{pct(whole, 0.95):.1f} s, max {max(whole, default=float('nan')):.1f} s; last half p50 "
        f"{pct(last, 0.5):.1f} s, p95 {pct(last, 0.95):.1f} s"
        + (f"; {result.unseen} writes never seen loaded" if result.unseen else "")
    )
    print(
        f"  runs: {result.runs_per_min:.1f} a minute ({jobs}); at most "
        f"{result.max_runs_partition_min} for one partition in a minute"
    )
    print(
        f"  center: the up process tree {result.center_cpu:.0%} of a core, the database server "
        f"{result.db_cpu:.0%}; RSS {result.center_rss_mb:,.0f} MB (tree, max)"
    )
    print(
        f"  shippers: CPU busiest {result.shipper_cpu_max:.1%} of a core, mean "
        f"{result.shipper_cpu_mean:.1%}; RSS largest {result.shipper_rss_max_mb:.0f} MB, mean "
        f"{result.shipper_rss_mean_mb:.0f} MB"
    )
    if result.burst_lines:
        drain = result.burst_lines / result.burst_seconds
        print(
            f"  burst: {result.burst_lines:,} lines ({result.nodes} x "
            f"{result.burst_lines // result.nodes:,}) landed in {result.burst_landed_seconds:.1f}"
            f" s, drained (loaded) in {result.burst_seconds:.1f} s: "
            f"{drain:,.0f} lines/s; `ingest` of the same lines from one file: "
            f"{result.ingest_lines_per_s:,.0f} lines/s (the command's wall clock; "
            f"{result.ingest_load_lines_per_s:,.0f} over the load time it reports); ratio "
            f"{drain / result.ingest_lines_per_s:.2f} ({drain / result.ingest_load_lines_per_s:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--scenario", action="append", help="NODESxRATE, e.g. 20x100 (default: 20x100, 40x100)"
    )
    parser.add_argument("--burst", type=int, default=25_000, help="lines each node appends")
    args = parser.parse_args()
    scenarios = [tuple(map(float, s.split("x"))) for s in (args.scenario or ["20x100", "40x100"])]
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "db", "start"], cwd=ROOT, check=True
    )  # the embedded server, when that is the configured one
    server = database_url(load_settings())
    results = []
    for nodes, rate in scenarios:
        result = run_scenario(int(nodes), rate, args.minutes, args.burst, server)
        report(result)
        results.append(result)
    first = results[0]
    ok = {
        f"p95 < 10 s at {first.nodes} nodes": pct(first.window(False), 0.95) < 10
        and not first.unseen,
        f"<= 15 runs a minute at {first.nodes} nodes": first.runs_per_min <= 15,
        "not more runs with more nodes": all(
            r.runs_per_min <= first.runs_per_min + 1 for r in results[1:]
        ),
        "shipper < 100 MB": max(r.shipper_rss_max_mb for r in results) < 100,
        "shipper < 5% of a core": max(r.shipper_cpu_max for r in results) < 0.05,
    }
    for r in results:
        if r.burst_lines:
            ratio = r.burst_lines / r.burst_seconds / r.ingest_lines_per_s
            ok[f"drain >= 80% of ingest at {r.nodes} nodes ({ratio:.2f})"] = ratio >= 0.8
    for target, met in ok.items():
        print(f"target {target}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
