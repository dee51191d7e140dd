"""Storage benchmark: 30 days of generated lines (1,000,000 a day by default) in the hot tier
(PostgreSQL) and in the archive (Parquet), with the raw log, `gzip -1` and `zstd -3` of the
same lines as baselines; the archive's write rate; and the API over the 30 days while they are
hot against the same requests once they are only in the archive (p50/p95, same run).

Usage: uv run python bench/storage.py [--lines-per-day N] [--days D] [--requests R]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg
import uvicorn

from bench._common import OUT, ensure_log
from xray_pipeline.api.main import create_app
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tiering import leave_postgres
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.settings import load_settings

DB = "xray_bench_storage"
NODE = "bench-node"
# the targets of the archive issue
ARCHIVE_B_PER_LINE = 20
HOT_B_PER_ROW = 304
DAY_SECONDS = 10
USER_PAGE_P95_MS = 300
SEARCH_S = 2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fresh_database(server: str) -> str:
    with connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    return with_database(server, DB)


def ingest(url: str, log: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    # the rules are not what this bench measures: off, so that the import is shorter
    env.update(XRAY_DATABASE_URL=url, XRAY_RULES_EVALUATE="false",
               XRAY_STATS_OUTPUT=str(OUT / "storage-stats.jsonl"))  # fmt: skip
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "--log-level", "WARNING", "ingest",
         "--logfile", str(log), "--node", NODE],
        env=env, check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def _all_hot(url: str, lines: int) -> bool:
    """Whether the database holds the run's lines, none archived yet."""
    try:
        with connect(url) as conn:
            loaded = conn.execute("SELECT coalesce(sum(lines), 0) FROM ingest_ledger").fetchone()
            archived = conn.execute("SELECT count(*) FROM archive_days").fetchone()
    except psycopg.Error:  # no such database yet
        return False
    return loaded[0] == lines and archived[0] == 0


def hot_sizes(conn) -> tuple[int, dict[str, int], dict[str, int]]:
    """(rows of logs, bytes of each kind of relation, bytes of each index kind of logs)."""
    rows = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    parts = [r[0] for r in conn.execute(
        "SELECT c.oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'logs'::regclass"
    )]  # fmt: skip
    heap = conn.execute(
        "SELECT sum(pg_table_size(oid)) FROM unnest(%s::oid[]) AS oid", (parts,)
    ).fetchone()[0]
    indexes = dict(
        conn.execute(
            "SELECT coalesce(i.inhparent::regclass::text, ic.relname), "
            "sum(pg_relation_size(ic.oid)) FROM pg_index x "
            "JOIN pg_class ic ON ic.oid = x.indexrelid "
            "LEFT JOIN pg_inherits i ON i.inhrelid = ic.oid "
            "WHERE x.indrelid = ANY(%s::oid[]) GROUP BY 1 ORDER BY 2 DESC",
            (parts,),
        ).fetchall()
    )
    other = {
        t: conn.execute("SELECT pg_total_relation_size(%s::regclass)", (t,)).fetchone()[0]
        for t in ("dns_queries", "rejects", "endpoints", "users", "ip_places", "sources")
    }
    return rows, {"logs heap": heap, **other}, indexes


def compressed(log: Path, days: int) -> tuple[int, int, int]:
    """(lines, gzip -1 bytes, zstd -3 bytes) of the log's first day."""
    size = log.stat().st_size
    with log.open("rb") as fh:
        data = fh.read(size // days)
    data = data[: data.rfind(b"\n") + 1]
    gz = subprocess.run(["gzip", "-1", "-c"], input=data, capture_output=True, check=True).stdout
    zs = subprocess.run(["zstd", "-3", "-c", "-q"], input=data, capture_output=True,
                        check=True).stdout  # fmt: skip
    return data.count(b"\n"), len(gz), len(zs)


def serve(url: str, store: ArchiveStore) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        create_app(url, pool_size=8, archive=store), host="127.0.0.1", port=port,
        log_level="warning",
    ))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return base
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the API did not start")


def measure(base: str, scenarios: dict, requests: int) -> dict[str, tuple]:
    """{scenario: (times in ms, the first answer, how many answers were not 200)}; a request
    that runs out of the statement timeout (a 503) counts as not answered."""
    results = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        for name, params in scenarios.items():
            first = client.get("/api/logs", params=params)  # warm
            times, failed = [], 0
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get("/api/logs", params=params)
                times.append((time.perf_counter() - started) * 1000)
                failed += response.status_code != 200
                assert response.status_code in (200, 503), (name, response.text[:300])
            results[name] = (times, first.json(), failed)
    return results


def readers(url: str, store: ArchiveStore, scenarios: dict, runs: int) -> None:
    """The archive's reader chosen by measurement: the API's Polars lazy scan against DuckDB
    over the same files, in this process (DuckDB when installed: `uv run --with duckdb`)."""
    import datetime as dt

    from xray_pipeline.api.queries.archive import archive_filter, archive_page
    from xray_pipeline.core.archive.read import day_files
    from xray_pipeline.core.archive.tables import LOGS

    try:
        import duckdb
    except ImportError:
        print("\nreaders: DuckDB not installed (uv run --with duckdb ...): Polars alone")
        duckdb = None
    with connect(url) as conn:
        days = [r[0] for r in conn.execute("SELECT day FROM archive_days ORDER BY day")]
        paths = day_files(conn, LOGS, days)
    files = [store.uri(p) for p in paths]
    print(f"\nreaders over {len(files)} files, {runs} runs each, p50 / p95 ms:")
    for name, params in scenarios.items():
        names = None
        if "search" in params:
            with connect(url) as conn:
                text = f"%{params['search']}%"
                names = (
                    [r[0] for r in conn.execute("SELECT email FROM users WHERE email ILIKE %s",
                                                (text,))],
                    [r[0] for r in conn.execute(
                        "SELECT DISTINCT host FROM endpoints WHERE host ILIKE %s", (text,))],
                )  # fmt: skip
        condition = archive_filter(
            search=params.get("search"), protocol=None, tag=None, user=params.get("user"),
            status=None, node=params.get("node"), cursor=None, names=names,
            from_=dt.datetime.fromisoformat(params["from"]) if "from" in params else None,
            to=dt.datetime.fromisoformat(params["to"]) if "to" in params else None,
        )  # fmt: skip
        polars_t = []
        for _ in range(runs):
            started = time.perf_counter()
            archive_page(store, paths, condition, 50, 1000)
            polars_t.append((time.perf_counter() - started) * 1000)
        line = f"  {name:48s} Polars {pct(polars_t, 0.5):7.1f} / {pct(polars_t, 0.95):7.1f}"
        if duckdb is not None:
            where, values = [], []
            if "user" in params:
                where.append('"user" = ?')
                values.append(params["user"])
            if "node" in params:
                where.append("node = ?")
                values.append(params["node"])
            if "search" in params:
                where.append('("user" ILIKE ? OR dest_host ILIKE ? OR src_host ILIKE ?)')
                values += [f"%{params['search']}%"] * 3
            if "from" in params:
                where.append("ts >= ?::TIMESTAMPTZ AND ts < ?::TIMESTAMPTZ")
                values += [params["from"], params["to"]]
            query = (
                "SELECT * FROM read_parquet(?) WHERE "
                + (" AND ".join(where) or "true")
                + " ORDER BY ts DESC, source_id DESC, byte_offset DESC LIMIT 50"
            )
            counting = "SELECT count(*) FROM (SELECT 1 FROM read_parquet(?) WHERE " + (
                " AND ".join(where) or "true") + " LIMIT 1001)"  # fmt: skip
            db = duckdb.connect()
            duck_t = []
            for _ in range(runs):
                started = time.perf_counter()
                db.execute(query, [files, *values]).fetchall()
                db.execute(counting, [files, *values]).fetchall()
                duck_t.append((time.perf_counter() - started) * 1000)
            line += f" | DuckDB {pct(duck_t, 0.5):7.1f} / {pct(duck_t, 0.95):7.1f}"
        print(line)


def brin(url: str, base: str, last: str, requests: int) -> None:
    """The pages that lean on the `ts` index, with its btree and then with a BRIN index in its
    place (rows arrive in time order), in the same run; the btree is put back after."""
    import datetime as dt

    end = dt.datetime.fromisoformat(f"{last}T00:00:00+00:00")
    scenarios = {
        "the newest page": {"limit": 50},
        "an hour three days back": {"from": (end - dt.timedelta(days=3)).isoformat(),
                                    "to": (end - dt.timedelta(days=3, hours=-1)).isoformat(),
                                    "limit": 50},
        "rejected, the last 7 days": {"status": "rejected", "limit": 50,
                                      "from": (end - dt.timedelta(days=7)).isoformat()},
        "page 20 of a day (offset)": {"from": (end - dt.timedelta(days=1)).isoformat(),
                                      "to": end.isoformat(), "limit": 50, "offset": 1000},
    }  # fmt: skip
    size = "SELECT (pg_relation_size(%s::regclass) + coalesce((SELECT sum(pg_relation_size(" \
        "inhrelid)) FROM pg_inherits WHERE inhparent = %s::regclass), 0))::bigint"  # fmt: skip
    with connect(url) as conn:
        btree_size = conn.execute(size, ("logs_ts_idx", "logs_ts_idx")).fetchone()[0]
    btree = measure(base, scenarios, requests)
    with connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("DROP INDEX logs_ts_idx")
        conn.execute("CREATE INDEX logs_ts_brin ON logs USING brin (ts)")
        built = time.perf_counter() - started
        brin_size = conn.execute(size, ("logs_ts_brin", "logs_ts_brin")).fetchone()[0]
        conn.execute("ANALYZE logs")
    with_brin = measure(base, scenarios, requests)
    with connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX logs_ts_brin")
        conn.execute("CREATE INDEX logs_ts_idx ON logs (ts)")
        conn.execute("ANALYZE logs")
    print(f"\nts: btree {btree_size / 1e6:.1f} MB, BRIN {brin_size / 1e6:.2f} MB "
          f"(built in {built:.0f} s); {requests} requests each, p50 / p95 ms:")  # fmt: skip
    for name in scenarios:
        b, r = btree[name][0], with_brin[name][0]
        print(f"  {name:32s} btree {pct(b, 0.5):7.1f} / {pct(b, 0.95):7.1f} | "
              f"BRIN {pct(r, 0.5):7.1f} / {pct(r, 0.95):7.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines-per-day", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument(
        "--brin", action="store_true", help="also the ts pages with a BRIN index for the btree"
    )
    parser.add_argument(
        "--reuse", action="store_true",
        help="keep the database of an earlier run that stopped before archiving (its lines hot)",
    )  # fmt: skip
    args = parser.parse_args()
    lines = args.lines_per_day * args.days
    print(f"scale: {args.lines_per_day:,} lines a day for {args.days} days ({lines:,} lines), "
          f"{args.users:,} users")  # fmt: skip

    log = ensure_log(OUT / "storage.log", lines, days=args.days, users=args.users)
    server = database_url(load_settings())
    url = with_database(server, DB)
    if not (args.reuse and _all_hot(url, lines)):
        url = fresh_database(server)
        seconds = ingest(url, log)
        print(f"ingested in {seconds:.0f} s")
    root = OUT / "storage-archive"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    store = ArchiveStore(str(root))

    with connect(url, autocommit=True) as admin:
        admin.execute("VACUUM ANALYZE")
    with connect(url) as conn:
        rows, relations, indexes = hot_sizes(conn)
        days = [r[0] for r in conn.execute(
            "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM logs ORDER BY 1"
        )]  # fmt: skip
        user = conn.execute(
            "SELECT u.email FROM logs l JOIN users u ON u.id = l.user_id "
            "WHERE l.ts >= %s GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            (days[-1],),
        ).fetchone()[0]
        # a user of the middle of the list: most users have few rows a day
        median_user = conn.execute(
            "SELECT email FROM (SELECT u.email, count(*) AS n FROM logs l "
            "JOIN users u ON u.id = l.user_id WHERE l.ts >= %s GROUP BY 1) x "
            "ORDER BY n OFFSET (SELECT count(DISTINCT user_id) / 2 FROM logs WHERE ts >= %s) "
            "LIMIT 1",
            (days[-1], days[-1]),
        ).fetchone()[0]
    raw = log.stat().st_size
    sample, gz, zs = compressed(log, args.days)
    hot = relations["logs heap"] + sum(indexes.values())
    print(f"\nhot tier (PostgreSQL), {rows:,} rows of logs:")
    print(f"  logs heap {relations['logs heap'] / rows:6.1f} B/row")
    for name, size in indexes.items():
        print(f"  index {name:28s} {size / rows:6.1f} B/row")
    print(f"  logs heap + indexes {hot / rows:6.1f} B/row (issue's measure: {HOT_B_PER_ROW})")
    for name in ("dns_queries", "rejects", "endpoints", "users", "ip_places", "sources"):
        print(
            f"  {name:20s} {relations[name] / 1e6:8.1f} MB ({relations[name] / lines:5.1f} B/line)"
        )
    print(f"baselines: raw log {raw / lines:.1f} B/line; of day 1's {sample:,} lines: gzip -1 "
          f"{gz / sample:.1f} B/line, zstd -3 {zs / sample:.1f} B/line")  # fmt: skip
    print(
        f"landed bytes (a node's shipped lines): the raw log's {raw / lines:.1f} B/line until "
        "loaded and archived; the maintenance then removes them"
    )

    base = serve(url, store)
    first, last = days[0].isoformat(), (days[-1]).isoformat()
    month = {"from": f"{first}T00:00:00Z", "to": f"{last}T23:59:59Z"}
    scenarios = {
        "a user's log page over 30 days (busiest user)": {**month, "user": user, "limit": 50},
        "a user's log page over 30 days (median user)": {**month, "user": median_user,
                                                         "limit": 50},
        "a search over 30 days": {**month, "search": "site12", "limit": 50},
        "a search over 30 days matching nothing": {**month, "search": "nowhere-9z", "limit": 50},
        "a node's page": {"node": NODE, "limit": 50},
    }  # fmt: skip
    hot_results = measure(base, scenarios, args.requests)
    if args.brin:
        brin(url, base, last, args.requests)

    print(f"\narchiving {len(days)} days:")
    per_day, written, archived_rows = [], 0, 0
    with connect(url) as conn:
        for day in days:
            result = archive_day(conn, store, day, "UTC")
            per_day.append(result.seconds)
            written += result.bytes
            archived_rows += result.rows()
    print(f"  {archived_rows:,} rows, {written / 1e6:.1f} MB: {written / lines:.1f} B/line; "
          f"a day in {statistics.median(per_day):.1f} s (median), {max(per_day):.1f} s (slowest), "
          f"{archived_rows / sum(per_day):,.0f} rows/s")  # fmt: skip
    with connect(url) as conn:
        started = time.perf_counter()
        tiers = leave_postgres(conn, store, today=days[-1] + (days[1] - days[0]), hot_days=0,
                               timezone="UTC")  # fmt: skip
        verified = time.perf_counter() - started
    print(f"  {len(tiers.dropped)} days checked against PostgreSQL and dropped in "
          f"{verified:.0f} s; kept: {tiers.kept or 'none'}")  # fmt: skip
    cold_results = measure(base, scenarios, args.requests)

    readers(url, store, scenarios, min(args.requests, 20))

    print(f"\nthe API, {args.requests} requests each (same run): hot, then archived")
    for name in scenarios:
        hot_t, hot_body, hot_failed = hot_results[name]
        cold_t, cold_body, cold_failed = cold_results[name]
        same = hot_body.get("items") == cold_body.get("items")
        print(f"  {name:48s} hot p50 {pct(hot_t, 0.5):7.1f} p95 {pct(hot_t, 0.95):7.1f} ms "
              f"({hot_failed} timed out) | archive p50 {pct(cold_t, 0.5):7.1f} p95 "
              f"{pct(cold_t, 0.95):7.1f} ms ({cold_failed} timed out) | same items: "
              f"{same if not hot_failed else 'the hot tier timed out'}")  # fmt: skip

    archive_b = written / lines
    slowest = max(per_day) * 1_000_000 / args.lines_per_day
    user_p95 = max(pct(cold_results[n][0], 0.95) for n in scenarios if n.startswith("a user's"))
    search_p95 = max(pct(cold_results[n][0], 0.95) for n in scenarios if "search" in n) / 1000
    checks = [
        (f"archive {archive_b:.1f} B/line <= {ARCHIVE_B_PER_LINE}", archive_b <= ARCHIVE_B_PER_LINE),
        (f"hot tier {hot / rows:.0f} B/row < {HOT_B_PER_ROW}", hot / rows < HOT_B_PER_ROW),
        (f"a 1M-line day archived in {slowest:.1f} s < {DAY_SECONDS} (slowest day, scaled)",
         slowest < DAY_SECONDS),
        (f"user's 30-day page from the archive p95 {user_p95:.0f} ms < {USER_PAGE_P95_MS}",
         user_p95 < USER_PAGE_P95_MS),
        (f"search over 30 archived days p95 {search_p95:.2f} s < {SEARCH_S}", search_p95 < SEARCH_S),
    ]  # fmt: skip
    print("\ntargets:")
    for text, ok in checks:
        print(f"  {'met' if ok else 'NOT met'}: {text}")


if __name__ == "__main__":
    main()
