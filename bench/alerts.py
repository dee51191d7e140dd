"""Alerts benchmark: the fleet bench's setup (`xray-pipeline up` with everything on, N nodes
each a writer and a real `ship` process) with planted abuse, and a webhook receiver in this
process as the [alerts] target.

For each scenario (default 5,000 and then 100,000 users in the background mix) it writes the
mix for --minutes and, every --every seconds, plants a case on the fleet: a sharer (a new user
whose six sources, one every two seconds, go to the nodes in turn: the fourth breaks the
default IP limit of three) or a seeder (25 connections to TORRENT within five seconds: the
21st breaks the tagged limit of 20). It prints:
- append -> webhook: from the append of the line that broke the rule to the arrival of the
  incident's `opened` webhook, p50 / p95 / max;
- the baseline measured in the same run: from that append to the line being queryable in
  `logs`;
- rule evaluation: its time per evaluation (the mean), and its share of the tail run's work
  (evaluation seconds over load plus evaluation seconds, from the runs' materializations);
- precision and recall of the incidents against the planted cases (the background mix is the
  generator's default, in which nobody breaks a rule), and the webhooks per planted case.
Usage:
uv run python bench/alerts.py [--minutes 4] [--nodes 10] [--rate 100] [--users 5000 --users 100000]
"""

import argparse
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg

from bench._center import (
    clean_env,
    drop_databases,
    fleet_setup,
    start_center,
    start_shipper,
    stop_all,
    wait_ready,
)
from bench._common import append_at_rate
from bench.freshness import pct
from xray_pipeline.core.alerts.receiver import Receiver
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import database_url
from xray_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret"
SHARER_SOURCES = 6
SHARER_BREAKS_AT = 4  # the fourth distinct source is over the default limit of three
SEEDER_LINES = 25
SEEDER_BREAKS_AT = 21


@dataclass
class Case:
    rule: str
    user: str
    offending_at: float = 0.0  # when the breaking line was appended
    lines_until_offending: int = 0
    queryable_at: float | None = None
    webhook_at: float | None = None


@dataclass
class Result:
    users: int
    cases: list[Case] = field(default_factory=list)
    incidents: set[tuple[str, str]] = field(default_factory=set)
    webhooks: dict[str, int] = field(default_factory=dict)
    evaluations: int = 0
    evaluation_s: float = 0.0
    load_s: float = 0.0
    evaluated_rows: int = 0
    rows_read: int = 0
    loads: int = 0
    signed_ok: bool = True


def line(user: str, ip: str, tag: str = "direct", port: int = 40000) -> str:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    return (
        f"{now:%Y/%m/%d %H:%M:%S.%f} from {ip}:{port} accepted tcp:www.bench.example:443 "
        f"[vless-reality >> {tag}] email: {user}\n"
    )


def append(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


def plant_sharer(case: Case, logs: list[Path], index: int) -> None:
    for k in range(SHARER_SOURCES):
        ip = f"{20 + index % 150}.{(index * 7 + k * 31) % 250}.{k + 1}.10"
        append(logs[k % len(logs)], line(case.user, ip, port=40000 + k))
        if k + 1 == SHARER_BREAKS_AT:
            case.offending_at, case.lines_until_offending = time.time(), k + 1
        time.sleep(2)


def plant_seeder(case: Case, logs: list[Path], index: int) -> None:
    ip = f"{20 + index % 150}.200.{index % 250}.9"
    path = logs[index % len(logs)]
    for c in range(SEEDER_LINES):
        append(path, line(case.user, ip, tag="TORRENT", port=50000 + c))
        if c + 1 == SEEDER_BREAKS_AT:
            case.offending_at, case.lines_until_offending = time.time(), c + 1
        time.sleep(0.2)


def run_scenario(users: int, nodes: int, rate: float, minutes: float, every: float) -> Result:
    server = database_url(load_settings())
    name, url, work, tokens, logs = fleet_setup(server, "xray_bench_alerts", nodes)
    dagster_db = name + "_dagster"
    home = work / "center"
    receiver = Receiver(secret=SECRET.encode()).start()
    env = {
        **clean_env(),
        "XRAY_DATABASE_URL": url,
        "XRAY_HOME": str(home),
        "XRAY_DAGSTER_DATABASE": dagster_db,
        "XRAY_ALERTS_WEBHOOK_URL": receiver.url,
        "XRAY_ALERTS_WEBHOOK_SECRET": SECRET,
    }
    center, api_port, out_path = start_center(work, env)
    shippers: list[subprocess.Popen] = []
    result = Result(users)
    stop = threading.Event()
    try:
        wait_ready(center, out_path)
        shippers = [start_shipper(n, token, logs[n], api_port) for n, token in tokens.items()]
        time.sleep(5)  # the shippers' imports
        started_at = time.time()

        def write(i: int, node: str) -> None:
            append_at_rate(
                logs[node], rate=rate, seconds=minutes * 60, stop=stop, seed=100 + i,
                users=users, pool_size=20_000, on_write=lambda size: None,
            )  # fmt: skip

        def poll() -> None:  # when each case's breaking line is queryable
            with connect(url) as conn:
                while not stop.is_set():
                    waiting = [c for c in result.cases if c.offending_at and not c.queryable_at]
                    if waiting:
                        counts = dict(
                            conn.execute(
                                "SELECT u.email, count(*) FROM logs l JOIN users u "
                                "ON u.id = l.user_id WHERE u.email = ANY(%s) GROUP BY 1",
                                ([c.user for c in waiting],),
                            ).fetchall()
                        )
                        conn.commit()
                        now = time.time()
                        for case in waiting:
                            if counts.get(case.user, 0) >= case.lines_until_offending:
                                case.queryable_at = now
                    time.sleep(0.25)

        writers = [
            threading.Thread(target=write, args=(i, node), daemon=True)
            for i, node in enumerate(tokens)
        ]
        poller = threading.Thread(target=poll, daemon=True)
        for thread in [*writers, poller]:
            thread.start()
        planters = []
        index = 0
        node_logs = list(logs.values())
        while time.time() - started_at < minutes * 60 - 30:
            time.sleep(every)
            rule = "ip_limit" if index % 2 == 0 else "tagged"
            case = Case(rule, f"{'sharer' if rule == 'ip_limit' else 'seeder'}-{index}@bench")
            result.cases.append(case)
            plant = plant_sharer if rule == "ip_limit" else plant_seeder
            thread = threading.Thread(target=plant, args=(case, node_logs, index), daemon=True)
            thread.start()
            planters.append(thread)
            index += 1
        for thread in [*writers, *planters]:
            thread.join()
        ended_at = time.time()
        settle = time.monotonic() + 60  # the last cases' webhooks
        while time.monotonic() < settle:
            opened = {r.body["incident"]["subject"] for r in receiver.requests
                      if r.body.get("event") == "opened"}  # fmt: skip
            if all(c.user in opened for c in result.cases) and all(
                c.queryable_at for c in result.cases
            ):
                break
            time.sleep(0.5)
        stop.set()
        for request in receiver.requests:
            body = request.body
            result.signed_ok &= request.signed is True
            if body.get("event") != "opened":
                continue
            subject = body["incident"]["subject"]
            result.webhooks[subject] = result.webhooks.get(subject, 0) + 1
            for case in result.cases:
                if case.user == subject and case.webhook_at is None:
                    case.webhook_at = request.at
        with connect(url) as conn:
            result.incidents = set(conn.execute("SELECT rule, subject FROM incidents").fetchall())
        instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        for key in ("incidents", "logs"):
            for record in materializations(instance, key):
                if not started_at <= record.timestamp <= ended_at:
                    continue
                meta = record.asset_materialization.metadata
                if key == "incidents":
                    result.evaluations += meta["evaluations"].value
                    result.evaluation_s += meta["evaluation_seconds"].value
                    result.evaluated_rows += meta["evaluated_rows"].value
                    result.rows_read += meta["rows_read"].value
                elif "load_seconds" in meta:
                    result.loads += 1
                    result.load_s += meta["load_seconds"].value
        instance.dispose()
    finally:
        stop.set()
        receiver.stop()
        stop_all(shippers, center)
    drop_databases(server, name, dagster_db)
    return result


def materializations(instance: dg.DagsterInstance, key: str) -> list:
    """Every materialization record of an asset (fetched 10,000 at a time)."""
    records, cursor = [], None
    while True:
        page = instance.fetch_materializations(dg.AssetKey(key), limit=10_000, cursor=cursor)
        records += page.records
        if not page.has_more:
            return records
        cursor = page.cursor


def report(r: Result) -> None:
    to_hook = [c.webhook_at - c.offending_at for c in r.cases if c.webhook_at and c.offending_at]
    to_query = [
        c.queryable_at - c.offending_at for c in r.cases if c.queryable_at and c.offending_at
    ]
    planted = {(c.rule, c.user) for c in r.cases}
    hit = planted & r.incidents
    precision = len(hit) / len(r.incidents) if r.incidents else float("nan")
    recall = len(hit) / len(planted) if planted else float("nan")
    per_case = [r.webhooks.get(c.user, 0) for c in r.cases]
    share = r.evaluation_s / (r.evaluation_s + r.load_s) if r.load_s else float("nan")
    print(f"\n== {r.users:,} users: {len(r.cases)} planted cases ==")
    print(
        f"append -> webhook (s):   p50 {pct(to_hook, 0.5):.2f}  p95 {pct(to_hook, 0.95):.2f}  "
        f"max {max(to_hook, default=float('nan')):.2f}  (n={len(to_hook)}; target p95 < 20)"
    )
    print(
        f"append -> queryable (s): p50 {pct(to_query, 0.5):.2f}  p95 {pct(to_query, 0.95):.2f}  "
        f"max {max(to_query, default=float('nan')):.2f}  (the baseline, same run)"
    )
    mean = r.evaluation_s / r.evaluations if r.evaluations else float("nan")
    print(
        f"rule evaluation: {r.evaluations} evaluations, mean {mean * 1000:.1f} ms, "
        f"{r.evaluated_rows:,} rows judged, {r.rows_read:,} read; {r.evaluation_s:.1f} s against {r.load_s:.1f} s of "
        f"{r.loads} loads: {share:.1%} of the run's work (target < 10%)"
    )
    print(
        f"precision {precision:.0%}  recall {recall:.0%}  ({len(hit)} of {len(planted)} planted "
        f"found, {len(r.incidents)} incidents in all)"
    )
    extra = sorted(r.incidents - planted)[:5]
    if extra:
        print(f"  not planted: {extra}")
    print(
        f"opened webhooks per case: min {min(per_case, default=0)} max "
        f"{max(per_case, default=0)}; signatures {'all valid' if r.signed_ok else 'NOT valid'}"
    )
    if to_hook:
        print(f"  webhook delay median minus queryable median: "
              f"{statistics.median(to_hook) - statistics.median(to_query or [0]):.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="lines a second per node")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between planted cases")
    parser.add_argument("--users", type=int, action="append")
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "db", "start"], cwd=ROOT, check=True
    )  # the embedded server, when that is the configured one
    for users in args.users or [5_000, 100_000]:
        print(
            f"scenario: {args.nodes} nodes x {args.rate:g} lines/s, {users:,} users, "
            f"{args.minutes:g} min, a case every {args.every:g} s",
            flush=True,
        )
        report(run_scenario(users, args.nodes, args.rate, args.minutes, args.every))


if __name__ == "__main__":
    main()
