"""Migration benchmark: 2,000,000 legacy rows moved to the partitioned schema.

Builds the original tool's unpartitioned `logs` (with its reference tables) in a scratch
database, runs `xray-pipeline migrate`, and prints the wall time, rows/s, and from a monitor
polling pg_locks every 10 ms: the longest time any lock on `logs` was held, by mode
(ROW EXCLUSIVE, held by a day's copy, does not block readers; the attach of a partition takes
SHARE UPDATE EXCLUSIVE, which does not block them either).
Usage: uv run python bench/migrate.py [--rows N] [--days D]
"""

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg import sql

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.settings import load_settings

LEGACY = """
CREATE TABLE users (id serial PRIMARY KEY, email varchar UNIQUE);
CREATE TABLE protocols (id serial PRIMARY KEY, name varchar UNIQUE);
CREATE TABLE endpoints (id serial PRIMARY KEY, address varchar UNIQUE);
CREATE TABLE tags (id serial PRIMARY KEY, name varchar UNIQUE);
CREATE TABLE logs (id bigserial PRIMARY KEY, "timestamp" timestamptz, source_ip inet,
    source_port int, action varchar, protocol_id int, destination_id int, destination_port int,
    inbound_tag_id int, outbound_tag_id int, user_id int);
INSERT INTO users (email) SELECT 'user' || i FROM generate_series(1, 5000) i;
INSERT INTO protocols (name) VALUES ('tcp'), ('udp');
INSERT INTO endpoints (address) SELECT 'www.site' || i || '.example' FROM generate_series(1, 20000) i;
INSERT INTO tags (name) VALUES ('vless-in'), ('trojan-in'), ('direct'), ('warp');
"""
FILL = """
INSERT INTO logs ("timestamp", source_ip, source_port, action, protocol_id, destination_id,
                  destination_port, inbound_tag_id, outbound_tag_id, user_id)
SELECT timestamptz '2025-01-01' + (i * (%(days)s * 86400.0 / %(rows)s)) * interval '1 second',
       ('10.' || (i %% 250) || '.' || (i / 250 %% 250) || '.1')::inet, 1024 + i %% 60000,
       CASE WHEN i %% 20 = 0 THEN 'rejected' ELSE 'accepted' END, 1 + i %% 2,
       1 + (i::bigint * 7919) %% 20000, CASE WHEN i %% 3 = 0 THEN 80 ELSE 443 END, 1 + i %% 2,
       3 + i %% 2, CASE WHEN i %% 50 = 0 THEN NULL ELSE 1 + (i * 31) %% 5000 END
FROM generate_series(%(lo)s, %(hi)s) AS i
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()

    server = database_url(load_settings())
    name = f"xray_bench_migrate_{uuid.uuid4().hex[:6]}"
    with connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    with connect(url) as conn:
        conn.execute(LEGACY)
        step = 500_000
        for lo in range(1, args.rows + 1, step):
            conn.execute(
                FILL,
                {
                    "days": args.days,
                    "rows": args.rows,
                    "lo": lo,
                    "hi": min(lo + step - 1, args.rows),
                },
            )
        conn.commit()
    print(f"legacy table: {args.rows:,} rows over {args.days} days")

    held: dict[tuple[int, str, str], list[float]] = {}  # per transaction and lock mode
    stop = threading.Event()

    def monitor() -> None:
        with connect(url, autocommit=True) as mon:
            while not stop.is_set():
                now = time.perf_counter()
                for pid, vxid, mode in mon.execute(
                    "SELECT l.pid, l.virtualtransaction, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'logs' AND c.relnamespace = 'public'::regnamespace "
                    "AND l.granted AND l.pid <> pg_backend_pid()"
                ).fetchall():
                    span = held.setdefault((pid, vxid, mode), [now, now])
                    span[1] = now
                time.sleep(0.01)

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env["XRAY_DATABASE_URL"] = url
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", "migrate", "--batch-days", "7"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    stop.set()
    watcher.join(timeout=5)
    with connect(url) as conn:
        copied = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    assert copied == args.rows, (copied, args.rows)
    by_mode: dict[str, float] = {}
    for (_, _, mode), (first, last) in held.items():
        by_mode[mode] = max(by_mode.get(mode, 0.0), last - first)
    print(f"migrate: {wall:.1f} s = {args.rows / wall:,.0f} rows/s (rows verified: {copied:,})")
    for mode, seconds in sorted(by_mode.items(), key=lambda kv: -kv[1]):
        print(f"longest {mode} on logs: {seconds:.2f} s")
    strong = {m: s for m, s in by_mode.items() if m not in ("AccessShareLock", "RowExclusiveLock")}
    print(
        "a lock that blocks readers (AccessExclusiveLock) is taken only when the schema is "
        "created, before any row is copied: "
        + (
            f"{strong['AccessExclusiveLock']:.2f} s"
            if "AccessExclusiveLock" in strong
            else "none seen"
        )
    )
    with connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


if __name__ == "__main__":
    main()
