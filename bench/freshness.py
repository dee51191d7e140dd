"""Freshness benchmark: delay from a line's append to its row being queryable, via `up`.

Runs `xray-pipeline up` (Dagster webserver + daemon, access_log_sensor, default settings) on a
fresh database, appends generated lines at --rate lines/s for --seconds, polls the ledger for
the loaded byte offset, and prints the p50/p95 delay and what it is made of (sensor wait, run
queue and launch, load), from the runs' own timestamps.
Usage: uv run python bench/freshness.py [--rate 1000] [--seconds 60]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg import sql

from bench._common import OUT
from xray_pipeline.core.generate import GeneratorConfig, build_frame, render
from xray_pipeline.core.pg import connect, database_url, with_database
from xray_pipeline.settings import load_settings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="lines appended per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to append")
    args = parser.parse_args()

    settings = load_settings()
    server = database_url(settings)
    name = f"xray_bench_fresh_{uuid.uuid4().hex[:6]}"
    dagster_db = name + "_dagster"
    with connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    home = OUT / "freshness-home"
    log = OUT / "freshness.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(XRAY_DATABASE_URL=url, XRAY_HOME=str(home), XRAY_DAGSTER_DATABASE=dagster_db)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = (OUT / "freshness-up.out").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xray_pipeline.cli",
            "up",
            "--logfile",
            str(log),
            "--port",
            str(port),
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    appended: list[tuple[float, int]] = []  # (time, file size after the write)
    seen: list[tuple[float, int]] = []  # (time, loaded end offset)
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 300
        while "ready:" not in (OUT / "freshness-up.out").read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("up did not become ready; see bench/out/freshness-up.out")
            time.sleep(1)

        def poll() -> None:
            with connect(url) as conn:
                while not stop.is_set():
                    end = conn.execute(
                        "SELECT coalesce(max(end_offset), 0) FROM ingest_ledger"
                    ).fetchone()[0]
                    conn.commit()
                    seen.append((time.time(), end))
                    time.sleep(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        tick = 0.1
        per_tick = int(args.rate * tick)
        started = time.monotonic()
        with log.open("ab") as fh:
            while time.monotonic() - started < args.seconds:
                frame = render(
                    build_frame(
                        GeneratorConfig(lines=per_tick, seed=tick_seed(len(appended))),
                        timestamps=None,
                    )
                )
                now_local = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
                text = "\n".join(now_local + line[19:] for line in frame["line"].to_list()) + "\n"
                fh.write(text.encode())
                fh.flush()
                appended.append((time.time(), fh.tell()))
                time.sleep(max(0.0, started + len(appended) * tick - time.monotonic()))
        final = appended[-1][1]
        deadline = time.monotonic() + 120
        while (not seen or seen[-1][1] < final) and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        poller.join(timeout=5)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)

    delays = []
    for t_append, offset in appended:
        hit = next((t for t, end in seen if end >= offset and t >= t_append), None)
        if hit is not None:
            delays.append(hit - t_append)
    missing = len(appended) - len(delays)

    with connect(with_database(server, dagster_db)) as conn:
        runs = conn.execute(
            "SELECT extract(epoch FROM create_timestamp), start_time, end_time FROM runs "
            "WHERE status = 'SUCCESS' AND start_time IS NOT NULL"
        ).fetchall()
    launch = [float(s) - float(c) for c, s, _ in runs]
    load = [float(e) - float(s) for _, s, e in runs]
    print(
        f"appended {len(appended) * per_tick:,} lines at {args.rate:g} lines/s for "
        f"{args.seconds:g} s; {len(runs)} successful runs"
    )
    print(
        f"append -> queryable: p50 {percentile(delays, 0.5):.1f} s, "
        f"p95 {percentile(delays, 0.95):.1f} s, max {max(delays):.1f} s"
        + (f" ({missing} batches never seen)" if missing else "")
    )
    print(
        f"per run: queue + launch mean {statistics.mean(launch):.1f} s, "
        f"load (run start to end) mean {statistics.mean(load):.1f} s; "
        f"sensor interval {settings.dagster.sensor_interval} s (a line waits up to "
        "one interval for the next tick, plus the daemon's own loop)"
    )
    print(f"target: p95 < 15 s: {'met' if percentile(delays, 0.95) < 15 else 'NOT met'}")
    with connect(server, autocommit=True) as admin:
        for db in (name, dagster_db):
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )


def tick_seed(n: int) -> int:
    return 1000 + n


if __name__ == "__main__":
    main()
