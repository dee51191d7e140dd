"""Fleet benchmark: N nodes shipping to one center (`xray-pipeline up` with everything on, no
local log) on this machine: a few real `xray-pipeline ship` processes, each following a file
that a writer appends to, and the rest simulated by bench/fleet_nodes.py, one process that
speaks the ship protocol as many nodes (own token, source, offsets), so that 200 fit here.

For each scenario (NODESxRATE: nodes and lines a second per node) it runs for --minutes and
prints:
- append -> queryable delay across nodes (a write counts once the ledger holds as many bytes of
  that node as its log had after the write): p50, p95, max, over the run and its last half;
- Dagster runs created per minute (per job), and Dagster event rows written a minute;
- the center's CPU (the `up` process tree, runs included, and the PostgreSQL server
  separately) as a share of one core, and its RSS (the tree's sum, sampled, maximum);
- the ledger rows added per source per hour, and the rows left after a compaction;
- the real shippers' CPU and RSS: the busiest one's and the mean;
then a burst: every node appends --burst-total / N lines at once, and the aggregate drain rate
(lines a second from the burst's write to the last of them loaded) as a ratio to
`xray-pipeline ingest` of the same lines from one local file into an empty database, measured
in the same run. With --against REV every scenario runs again with that git revision's center
(a worktree; the simulator is this one: the protocol is the same).
Usage:
uv run python bench/fleet.py [--minutes 3] [--scenario 200x20 --scenario 20x200 ...]
                             [--burst-total 1000000] [--real 3] [--against REV]
"""

import argparse
import bisect
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from bench._center import (
    ROOT,
    cpu_shares,
    drop_databases,
    fleet_setup,
    loaded_by_node,
    new_database,
    sample,
    start_center,
    start_shipper,
    start_simulator,
    stop_all,
    tree_cpu_by_process,
    tree_env,
    tree_rss_mb,
    wait_ready,
)
from bench._common import OUT, append_at_rate
from bench.freshness import pct, server_cpu_seconds, tree_cpu_seconds
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.core.ingest.compact import compact_ledger
from xray_pipeline.settings import load_settings

# seconds of writing before the measured window (the tail run's start, the first loads)
WARMUP_S = 45


@dataclass
class Result:
    label: str
    nodes: int
    rate: float
    delays: list[tuple[float, float]] = field(default_factory=list)  # (append time, delay)
    unseen: int = 0
    half: float = 0.0
    runs_per_min: float = 0.0
    runs_by_job: dict[str, int] = field(default_factory=dict)
    events_per_min: float = 0.0
    center_cpu: float = 0.0
    db_cpu: float = 0.0
    center_rss_mb: float = 0.0
    ledger_rows_per_source_hour: float = 0.0
    sources: int = 0
    ledger_rows_compacted: int | None = None
    landing_calls: str = ""
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    nodes_api_ms: float = float("nan")
    metrics_ms: float = float("nan")
    shipper_cpu_max: float = 0.0
    shipper_cpu_mean: float = 0.0
    shipper_rss_max_mb: float = 0.0
    shipper_rss_mean_mb: float = 0.0
    burst_lines: int = 0
    burst_seconds: float = float("nan")
    ingest_lines_per_s: float = float("nan")

    def window(self, last: bool) -> list[float]:
        return [d for t, d in self.delays if not last or t >= self.half]

    @property
    def drain_ratio(self) -> float:
        return self.burst_lines / self.burst_seconds / self.ingest_lines_per_s


def run_scenario(
    nodes: int, rate: float, minutes: float, burst_total: int, server: str, *,
    real: int, tree: Path | None, label: str,
) -> Result:  # fmt: skip
    real = min(real, nodes)
    name, url, work, tokens, logs = fleet_setup(
        server, "xray_bench_fleet", nodes, real=real, tree=tree
    )
    dagster_db = name + "_dagster"
    env = {
        **tree_env(tree),
        "XRAY_DATABASE_URL": url,
        "XRAY_HOME": str(work / "center"),
        "XRAY_DAGSTER_DATABASE": dagster_db,
    }
    center, api_port, out_path = start_center(work, env, tree)
    shippers: list[subprocess.Popen] = []
    simulator: subprocess.Popen | None = None
    result = Result(label, nodes, rate)
    burst = burst_total // nodes
    appended: list[tuple[float, str, int]] = []  # (time, node, size after the write)
    seen: dict[str, list[tuple[float, int]]] = {node: [] for node in tokens}
    stop = threading.Event()
    simulated = {n: t for n, t in tokens.items() if n not in logs}
    try:
        wait_ready(center, out_path)
        shippers = [start_shipper(n, tokens[n], log, api_port, tree) for n, log in logs.items()]
        writing = minutes * 60 + WARMUP_S
        if simulated:
            simulator = start_simulator(work, simulated, api_port, rate, writing, burst)
        top = psutil.Process(center.pid)
        ship_procs = [psutil.Process(p.pid) for p in shippers]
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
                logs[node], rate=rate, seconds=writing, stop=stop, seed=100 + i, users=300,
                pool_size=2_000, on_write=lambda size: appended.append((time.time(), node, size)),
            )  # fmt: skip

        watchers = [threading.Thread(target=f, daemon=True) for f in (poll, watch_memory)]
        writers = [
            threading.Thread(target=write, args=(i, node), daemon=True)
            for i, node in enumerate(logs)
        ]
        for thread in [*watchers, *writers]:
            thread.start()
        # the first lines of the day start the tail run: the window opens once it runs
        time.sleep(WARMUP_S)
        started_at = time.time()
        cpu0, db0, wall0 = tree_cpu_seconds(top), server_cpu_seconds(), time.monotonic()
        by0 = tree_cpu_by_process(top)
        ship0 = sample(ship_procs)
        with connect(url) as conn:
            ledger0 = conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0]
        for thread in writers:
            thread.join()
        time.sleep(max(0.0, started_at + minutes * 60 - time.time()))
        ended_at = time.time()
        cpu1, db1, wall1 = tree_cpu_seconds(top), server_cpu_seconds(), time.monotonic()
        result.cpu_by_process = cpu_shares(by0, tree_cpu_by_process(top), wall1 - wall0)
        ship1 = sample(ship_procs)
        with connect(url) as conn:
            ledger1, result.sources = conn.execute(
                "SELECT (SELECT count(*) FROM ingest_ledger), "
                "(SELECT count(*) FROM sources WHERE node IS NOT NULL)"
            ).fetchone()
        time.sleep(10)  # the last writes' loads
        result.nodes_api_ms, result.metrics_ms = api_times(api_port)

        # the burst: every node appends a backlog at once; drained when all of it is loaded
        if burst:
            with connect(url) as conn:
                before = loaded_by_node(conn)
            t0 = time.time()
            target: dict[str, int] = {}
            if simulator is not None:
                os.kill(simulator.pid, signal.SIGUSR1)
                ends = work / "simulated" / "burst.json"
                while not ends.exists():
                    time.sleep(0.05)
                time.sleep(0.05)
                target |= json.loads(ends.read_text())
                text = (work / "simulated" / "burst-lines.log").read_bytes()
            else:
                from xray_pipeline.core.synthetic.live import line_pool, stamped

                pool = line_pool(size=burst, seed=7, users=300, other_share=0.15)
                text = stamped(pool, dt.datetime.now(dt.UTC).replace(tzinfo=None)).encode()
            for node, log in logs.items():
                with log.open("ab") as fh:
                    fh.write(text)
                target[node] = before.get(node, 0) + len(text)
            with connect(url) as conn:
                while time.time() - t0 < 900:
                    done = loaded_by_node(conn)
                    if all(done.get(n, 0) >= target[n] for n in tokens):
                        break
                    time.sleep(0.2)
            result.burst_lines = burst * nodes
            result.burst_seconds = time.time() - t0
            (work / "burst.log").write_bytes(text * nodes)
    finally:
        stop.set()
        if simulator is not None:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(timeout=120)
        stop_all(shippers, center)

    if simulator is not None:
        said = (work / "simulated" / "out.txt").read_text()
        result.landing_calls = next((x for x in said.splitlines() if x.startswith("landing")), "")
        for line in (work / "simulated" / "writes.txt").read_text().splitlines():
            t, node, end = line.split()
            appended.append((float(t), node, int(end)))
    span = (ended_at - started_at) / 60
    result.half = started_at + (ended_at - started_at) / 2
    polls = {node: ([t for t, _ in got], [end for _, end in got]) for node, got in seen.items()}
    for t_append, node, size in appended:
        if not started_at <= t_append <= ended_at:
            continue
        times, ends = polls[node]  # both ascending: the first poll after the write that saw it
        at = max(bisect.bisect_left(times, t_append), bisect.bisect_left(ends, size))
        if at == len(times):
            result.unseen += 1
        else:
            result.delays.append((t_append, times[at] - t_append))
    storage = with_database(server, dagster_db)
    window = (dt.datetime.fromtimestamp(started_at, dt.UTC).replace(tzinfo=None),
              dt.datetime.fromtimestamp(ended_at, dt.UTC).replace(tzinfo=None))  # fmt: skip
    with connect(storage) as conn:
        runs = conn.execute(
            "SELECT pipeline_name FROM runs WHERE create_timestamp BETWEEN %s AND %s", window
        ).fetchall()
        events = conn.execute(
            "SELECT count(*) FROM event_logs WHERE timestamp BETWEEN %s AND %s", window
        ).fetchone()[0]
    result.runs_per_min = len(runs) / span
    for (job,) in runs:
        result.runs_by_job[job] = result.runs_by_job.get(job, 0) + 1
    result.events_per_min = events / span
    wall = wall1 - wall0
    result.center_cpu = (cpu1 - cpu0) / wall
    result.db_cpu = (db1 - db0) / wall
    result.center_rss_mb = max(rss_center, default=0.0)
    result.ledger_rows_per_source_hour = (
        (ledger1 - ledger0) / max(result.sources, 1) / (wall / 3600)
    )
    if tree is None:  # the revision before compaction has none to run
        with connect(url) as conn:
            compact_ledger(conn, timezone="UTC", after=dt.timedelta(0))
            result.ledger_rows_compacted = conn.execute(
                "SELECT count(*) FROM ingest_ledger"
            ).fetchone()[0]
    if shippers:
        shares = [(b[0] - a[0]) / wall for a, b in zip(ship0, ship1, strict=True)]
        result.shipper_cpu_max = max(shares)
        result.shipper_cpu_mean = sum(shares) / len(shares)
        per_shipper = [max(col) for col in zip(*rss_ship, strict=True)] if rss_ship else [0.0]
        result.shipper_rss_max_mb = max(per_shipper)
        result.shipper_rss_mean_mb = sum(per_shipper) / len(per_shipper)
    drop_databases(server, name, dagster_db)
    if burst:
        result.ingest_lines_per_s = ingest_rate(
            work / "burst.log", server, result.burst_lines, tree
        )
    return result


def api_times(api_port: int) -> tuple[float, float]:
    """The median milliseconds of GET /api/nodes and of GET /metrics, over five calls each
    (no [api] token is set)."""
    import statistics
    import urllib.request

    medians = []
    for path in ("/api/nodes", "/metrics"):
        times = []
        for _ in range(5):
            began = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}{path}", timeout=30) as answer:
                answer.read()
            times.append(1000 * (time.perf_counter() - began))
        medians.append(statistics.median(times))
    return medians[0], medians[1]


def ingest_rate(log: Path, server: str, lines: int, tree: Path | None = None) -> float:
    """`xray-pipeline ingest` (of `tree`) of the burst's lines from one local file into an
    empty database: lines a second over the command's wall clock (as the drain counts its
    whole path, from the write)."""
    name, url = new_database(server, "xray_bench_fleet_ingest")
    env = tree_env(tree)
    env.update(
        XRAY_DATABASE_URL=url,
        XRAY_HOME=str(log.parent / "ingest-home"),
        XRAY_PARSER_TIMEZONE="UTC",
    )
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "ingest", "--logfile", str(log)],
        env=env, cwd=tree or ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.monotonic() - started
    drop_databases(server, name)
    return lines / seconds


def report(result: Result) -> None:
    whole, last = result.window(False), result.window(True)
    jobs = ", ".join(f"{job} {n}" for job, n in sorted(result.runs_by_job.items())) or "none"
    print(f"{result.nodes} nodes x {result.rate:g} lines/s ({result.label}):")
    print(
        f"  append -> queryable across nodes: p50 {pct(whole, 0.5):.1f} s, p95 "
        f"{pct(whole, 0.95):.1f} s, max {max(whole, default=float('nan')):.1f} s; last half p50 "
        f"{pct(last, 0.5):.1f} s, p95 {pct(last, 0.95):.1f} s"
        + (f"; {result.unseen} writes never seen loaded" if result.unseen else "")
    )
    print(
        f"  center: the up process tree {result.center_cpu:.0%} of a core, the database server "
        f"{result.db_cpu:.0%}; RSS {result.center_rss_mb:,.0f} MB (tree, max)"
    )
    print(
        "  center by process: "
        + ", ".join(f"{label} {share:.0%}" for label, share in result.cpu_by_process.items())
    )
    print(
        f"  Dagster: {result.runs_per_min:.1f} runs a minute ({jobs}), "
        f"{result.events_per_min:,.0f} event rows a minute"
    )
    compacted = (
        f"; {result.ledger_rows_compacted:,} rows for {result.sources} sources after a compaction"
        if result.ledger_rows_compacted is not None
        else ""
    )
    print(
        f"  ledger: {result.ledger_rows_per_source_hour:,.0f} rows added per source per hour"
        + compacted
    )
    print(
        f"  API: GET /api/nodes {result.nodes_api_ms:.0f} ms, GET /metrics "
        f"{result.metrics_ms:.0f} ms (medians); simulated nodes' {result.landing_calls}"
    )
    if result.shipper_rss_max_mb:
        print(
            f"  real shippers: CPU busiest {result.shipper_cpu_max:.1%} of a core, mean "
            f"{result.shipper_cpu_mean:.1%}; RSS largest {result.shipper_rss_max_mb:.0f} MB, "
            f"mean {result.shipper_rss_mean_mb:.0f} MB"
        )
    if result.burst_lines:
        drain = result.burst_lines / result.burst_seconds
        print(
            f"  burst: {result.burst_lines:,} lines ({result.nodes} x "
            f"{result.burst_lines // result.nodes:,}) drained (loaded) in "
            f"{result.burst_seconds:.1f} s: {drain:,.0f} lines/s; `ingest` of the same lines "
            f"from one file: {result.ingest_lines_per_s:,.0f} lines/s; ratio "
            f"{result.drain_ratio:.2f}"
        )


def _worktree(rev: str) -> Path:
    """A checkout of `rev` beside the benchmark's output (made once)."""
    path = OUT / f"worktree-{rev}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
    return path


def targets(results: list[Result]) -> dict[str, bool]:
    """The issue's targets, over this tree's results."""
    by = {(r.nodes, r.rate): r for r in results}
    ok: dict[str, bool] = {}
    many, few = by.get((200, 20)), by.get((20, 200))
    if many and few:
        ratio = many.center_cpu / few.center_cpu
        ok[f"center CPU at 200x20 within 1.3x of 20x200 ({ratio:.2f})"] = ratio <= 1.3
    for r in results:
        ok[f"center CPU < 60% of a core at {r.nodes}x{r.rate:g} ({r.center_cpu:.0%})"] = (
            r.center_cpu < 0.6
        )
        p95 = pct(r.window(False), 0.95)
        ok[f"p95 < 3 s at {r.nodes}x{r.rate:g} ({p95:.1f} s)"] = p95 < 3 and not r.unseen
        if r.burst_lines and r.nodes >= 40:
            ok[f"drain >= 0.9 of ingest at {r.nodes} nodes ({r.drain_ratio:.2f})"] = (
                r.drain_ratio >= 0.9
            )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument(
        "--scenario",
        action="append",
        help="NODESxRATE, e.g. 200x20 (default: 200x20, 20x200, 40x100)",
    )
    parser.add_argument("--burst-total", type=int, default=1_000_000,
                        help="lines of the burst over all nodes")  # fmt: skip
    parser.add_argument("--real", type=int, default=3, help="real shippers among the nodes")
    parser.add_argument("--against", help="also run every scenario with this git revision")
    args = parser.parse_args()
    scenarios = [
        tuple(map(float, s.split("x"))) for s in (args.scenario or ["200x20", "20x200", "40x100"])
    ]
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "db", "start"], cwd=ROOT, check=True
    )  # the embedded server, when that is the configured one
    server = database_url(load_settings())
    trees = {"this tree": None} | ({args.against: _worktree(args.against)} if args.against else {})
    results = []
    for nodes, rate in scenarios:
        for label, tree in trees.items():
            result = run_scenario(
                int(nodes), rate, args.minutes, args.burst_total, server,
                real=args.real, tree=tree, label=label,
            )  # fmt: skip
            report(result)
            if tree is None:
                results.append(result)
    for target, met in targets(results).items():
        print(f"target {target}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
