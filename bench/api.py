"""API benchmark: 10,000,000 generated lines (30 days, 5,000 users), p50/p95 per endpoint.

In one run on one server: the sidecar's latencies over 200 requests per endpoint with typical
filters; the same questions answered the naive way (a count(*) over the five-way join plus an
ILIKE scan, as the original sidecar does); the busiest user's page against the same page read
wholly from `logs` (no rollups); and 20 concurrent clients for 30 s (errors counted).
With --against REV, the same requests also go to that revision's sidecar (a git worktree, this
environment) on the same database, the two taking turns request by request.
Usage: uv run python bench/api.py [--lines N] [--requests R] [--against REV]
"""

import argparse
import asyncio
import datetime as dt
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from psycopg import sql

from bench._common import OUT, ensure_log
from xray_pipeline.api.main import create_app
from xray_pipeline.api.queries.users import CONNECTIONS, USER_ACTIVITY
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.places import enrich_day
from xray_pipeline.core.privacy.policy import RowPolicy
from xray_pipeline.core.synthetic.mmdb import write_synthetic_geoip
from xray_pipeline.settings import load_settings

DB = "xray_bench_api"
NAIVE = """
SELECT count(*) FROM logs l
LEFT JOIN users u ON u.id = l.user_id LEFT JOIN endpoints e ON e.id = l.endpoint_id
LEFT JOIN protocols p ON p.id = l.dest_protocol_id LEFT JOIN tags t ON t.id = l.inbound_tag_id
LEFT JOIN tags t2 ON t2.id = l.outbound_tag_id
WHERE e.host ILIKE %(s)s OR u.email ILIKE %(s)s OR host(l.src_ip) ILIKE %(s)s
"""
NAIVE_PAGE = NAIVE.replace("SELECT count(*)", "SELECT l.*, u.email, e.host").rstrip() + (
    " ORDER BY l.ts DESC LIMIT 50"
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(server: str, lines: int) -> str:
    url = with_database(server, DB)
    with connect(server, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    with connect(url) as conn:
        apply_migrations(conn)
        conn.commit()
        have = conn.execute("SELECT coalesce(sum(lines), 0) FROM ingest_ledger").fetchone()[0]
    if have < lines:
        log = ensure_log(OUT / "api.log", lines, days=30, users=5000)
        env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
        env.update(XRAY_DATABASE_URL=url, XRAY_STATS_OUTPUT=str(OUT / "api-stats.jsonl"))
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "xray_pipeline.cli",
                "--log-level",
                "WARNING",
                "ingest",
                "--logfile",
                str(log),
            ],
            env=env,
            check=True,
        )
        print(f"ingested {lines:,} lines in {time.perf_counter() - started:.0f} s")
    with connect(url) as conn:
        # every rollup for every day (also on a database ingested before a rollup existed)
        days = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM logs ORDER BY 1"
            ).fetchall()
        ]
        for table in ROLLUPS:
            have_days = {
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT DISTINCT day FROM {}").format(sql.Identifier(table))
                ).fetchall()
            }
            missing = [day for day in days if day not in have_days]
            started = time.perf_counter()
            for day in missing:
                rebuild_rollup(conn, table, day, "UTC")
            if missing:
                print(
                    f"{table}: {len(missing)} days rebuilt in {time.perf_counter() - started:.0f} s"
                )
        # the sources placed, as with [geoip] configured (the synthetic databases place every
        # generated address): the ip_places backfill of each day
        if conn.execute("SELECT count(*) FROM ip_places").fetchone()[0] == 0:
            started = time.perf_counter()
            policy = RowPolicy(geoip=GeoIP(*write_synthetic_geoip(OUT / "geoip")))
            for day in days:
                enrich_day(conn, day, "UTC", policy)
            print(f"ip_places: {len(days)} days placed in {time.perf_counter() - started:.0f} s")
        conn.execute("ANALYZE")
        conn.commit()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--naive-requests", type=int, default=5)
    parser.add_argument("--concurrency-seconds", type=float, default=30)
    parser.add_argument("--against", help="also ask that git revision's sidecar, in turns")
    args = parser.parse_args()

    url = prepare(database_url(load_settings()), args.lines)
    with connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
        email = conn.execute(
            "SELECT email FROM users WHERE id = (SELECT user_id FROM logs "
            "WHERE user_id IS NOT NULL ORDER BY ts DESC LIMIT 1)"
        ).fetchone()[0]
        last = conn.execute("SELECT max(ts) FROM logs").fetchone()[0]
        busiest = conn.execute(
            "SELECT u.email FROM daily_user_ips d JOIN users u ON u.id = d.user_id "
            "GROUP BY u.email ORDER BY sum(d.connections) DESC LIMIT 1"
        ).fetchone()[0]
    print(f"logs: {rows:,} rows; busiest user {busiest}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(url, pool_size=8), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    week = (last - dt.timedelta(days=7)).isoformat()
    day = (last - dt.timedelta(days=1)).isoformat()
    month = {"from": (last - dt.timedelta(days=30)).isoformat(), "to": last.isoformat()}
    scenarios = {
        "/api/logs (first page)": ("/api/logs", {}),
        "/api/logs?user= (first page)": ("/api/logs", {"user": email}),
        "/api/logs?search= (first page)": ("/api/logs", {"search": "site12"}),
        "/api/logs?status=rejected&from=7d": ("/api/logs", {"status": "rejected", "from": week}),
        "/api/logs/stats (all time)": ("/api/logs/stats", {}),
        "/api/logs/stats (last 7 days)": ("/api/logs/stats", {"from": week}),
        "by place: /api/logs?country=NL (first page)": ("/api/logs", {"country": "NL"}),
        "by place: /api/logs/stats?country=DE (24 h)": (
            "/api/logs/stats",
            {"from": day, "country": "DE"},
        ),
        "by place: /api/timeseries?bucket=day&country=DE": (
            "/api/timeseries",
            {"bucket": "day", "country": "DE"},
        ),
        "/api/timeseries?bucket=day": ("/api/timeseries", {"bucket": "day"}),
        "/api/timeseries?bucket=hour&from=7d": (
            "/api/timeseries",
            {"bucket": "hour", "from": week},
        ),
        "/api/timeseries?bucket=day&tag=direct": (
            "/api/timeseries",
            {"bucket": "day", "tag": "direct"},
        ),
        "/api/users (first page)": ("/api/users", {}),
        "/api/users/{email} (last 7 days)": (f"/api/users/{email}", {"from": week}),
        "/api/users/{busiest} (30 days)": (f"/api/users/{busiest}", month),
        "/api/users/{busiest} (last 7 days)": (f"/api/users/{busiest}", {"from": week}),
        "/api/users/{email}/ips?window=60": (
            f"/api/users/{email}/ips",
            {"window": 60, "at": last.isoformat()},
        ),
    }
    results = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, (path, params) in scenarios.items():
            client.get(path, params=params)  # warm
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                response = client.get(path, params=params)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (name, response.text[:200])
            results[name] = times
            print(f"{name:50s} p50 {pct(times, 0.5):7.1f} ms   p95 {pct(times, 0.95):7.1f} ms")

    naive = []
    with connect(url) as conn:
        for _ in range(args.naive_requests):
            started = time.perf_counter()
            conn.execute(NAIVE, {"s": "%site12%"}).fetchone()
            conn.execute(NAIVE_PAGE, {"s": "%site12%"}).fetchall()
            naive.append((time.perf_counter() - started) * 1000)
    ours = results["/api/logs?search= (first page)"]
    print(
        f"naive search (count(*) over the join + ILIKE scan), {len(naive)} runs: "
        f"p50 {pct(naive, 0.5):,.0f} ms; ratio to /api/logs?search= p50: "
        f"{pct(naive, 0.5) / pct(ours, 0.5):,.0f}x"
    )

    # the busiest user's 30 days the way the page read them before its rollups: every query on
    # logs, sessions from every connection (the same SQL with no rolled day)
    live = []
    with connect(url) as conn:
        uid = conn.execute("SELECT id FROM users WHERE email = %s", (busiest,)).fetchone()[0]
        lo, hi = (dt.datetime.fromisoformat(month[k]) for k in ("from", "to"))
        params = {"uid": uid, "days": [], "lo": lo, "hi": hi, "gap": dt.timedelta(minutes=30),
                  "top": 10, "wlo0": lo, "whi0": hi}  # fmt: skip
        window = "(l.ts >= %(wlo0)s AND l.ts < %(whi0)s)"
        query = USER_ACTIVITY.format(live=window, segments=CONNECTIONS)
        for _ in range(args.naive_requests):
            started = time.perf_counter()
            conn.execute(query, params).fetchone()
            live.append((time.perf_counter() - started) * 1000)
    page = results["/api/users/{busiest} (30 days)"]
    print(
        f"baseline: the busiest user's 30 days all from logs, {len(live)} runs: p50 "
        f"{pct(live, 0.5):,.0f} ms; with the rollups p50 {pct(page, 0.5):,.1f} ms, p95 "
        f"{pct(page, 0.95):,.1f} ms (target p95 < 100 ms: "
        f"{'met' if pct(page, 0.95) < 100 else 'NOT met'})"
    )

    async def load() -> tuple[int, int]:
        ok = errors = 0
        deadline = time.monotonic() + args.concurrency_seconds
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def worker() -> None:
                nonlocal ok, errors
                while time.monotonic() < deadline:
                    path, params = random.choice(list(scenarios.values()))
                    try:
                        response = await client.get(path, params=params)
                        ok += response.status_code == 200
                        errors += response.status_code != 200
                    except httpx.HTTPError:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(20)))
        return ok, errors

    ok, errors = asyncio.run(load())
    print(
        f"20 concurrent clients for {args.concurrency_seconds:g} s: {ok:,} requests answered, "
        f"{errors} errors ({ok / args.concurrency_seconds:,.0f} requests/s)"
    )
    targeted = [
        k for k in results if k.startswith(("/api/logs (", "/api/logs?", "/api/logs/stats"))
    ]
    worst = max(targeted, key=lambda k: pct(results[k], 0.95))
    met = pct(results[worst], 0.95) < 50 and errors == 0
    print(
        f"target: p95 < 50 ms for every /api/logs first page and /api/logs/stats at {rows:,} "
        f"rows, no errors under load: {'met' if met else 'NOT met'} "
        f"(slowest: {worst}, p95 {pct(results[worst], 0.95):.1f} ms)"
    )
    if args.against:
        against(args.against, url, base, scenarios, args.requests)
    server.should_exit = True


def against(rev: str, url: str, base: str, scenarios: dict, requests: int) -> None:
    """The scenarios asked of this tree's sidecar and of `rev`'s, in turns."""
    root = Path(__file__).resolve().parents[1]
    tree = OUT / f"worktree-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=root,
                       check=True, capture_output=True)  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import sys, uvicorn; from xray_pipeline.api.main import create_app; "
        "uvicorn.run(create_app(sys.argv[1], pool_size=8), host='127.0.0.1', "
        "port=int(sys.argv[2]), log_level='warning')"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    other = subprocess.Popen([sys.executable, "-c", code, url, str(port)], cwd=tree, env=env)
    theirs = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{theirs}/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(f"\nthis tree against {rev}, {requests} requests each, in turns (p50 / p95 ms):")
        with httpx.Client(timeout=60) as client:
            for name, (path, params) in scenarios.items():
                times = {base: [], theirs: []}
                for server in (base, theirs):
                    client.get(server + path, params=params)  # warm
                for _ in range(requests):
                    for server in (base, theirs):
                        started = time.perf_counter()
                        response = client.get(server + path, params=params)
                        times[server].append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, (name, response.text[:200])
                mine, old = times[base], times[theirs]
                print(f"{name:50s} {pct(mine, 0.5):7.1f} / {pct(mine, 0.95):7.1f}   "
                      f"{rev}: {pct(old, 0.5):7.1f} / {pct(old, 0.95):7.1f}")  # fmt: skip
    finally:
        other.terminate()
        other.wait(timeout=30)


if __name__ == "__main__":
    main()
