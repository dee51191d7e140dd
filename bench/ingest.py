"""Ingest benchmark: `xray-pipeline ingest` end to end vs a plain COPY of the same rows.

On the same server in one run: (a) the wall time of `xray-pipeline ingest` on N generated lines
into an empty database, and its peak RSS; (b) the time of a plain `COPY` of the resulting
`logs` rows into a copy of `logs` with the same partitions and indexes (the physical limit of
the load); (c) the same ingest with country and ASN enrichment on ([geoip] country_db and
asn_db: the synthetic databases, which place every generated address, so every distinct
address is looked up and stored). Prints each, the ratios of the rates and lines/s.

With --rules, a first import of each of --rules-lines (default 1,000,000 and 10,000,000
generated lines over three days, the default 200 users, with planted sharers and seeders so
that incidents open) as a
new user runs it: `ingest` with the rules at their defaults, then the same with the rules off
(the rules' share is the difference, and the evaluation's own time that `ingest` prints), each
with its wall time and peak RSS, and a plain COPY of the same rows, --rules-repeat times
interleaved (medians); with --against REV the same ingests of that git revision (a worktree, this
environment), in the same run.
Usage: uv run python bench/ingest.py [--lines N] [--database-url URL]
       uv run python bench/ingest.py --rules [--rules-lines N ...] [--against REV]
"""

import argparse
import io
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg import sql

from bench._common import OUT, ensure_log
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.session import database_url, with_database
from xray_pipeline.core.synthetic.mmdb import write_synthetic_geoip
from xray_pipeline.settings import load_settings

BENCH_DB = "xray_bench_ingest"
GEO_DB = "xray_bench_ingest_geoip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument(
        "--users", type=int, default=200, help="generated users (about 3 source addresses each)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="ingests without and with enrichment, interleaved; their medians are compared",
    )
    parser.add_argument("--database-url", help="server to use (default: the configured one)")
    parser.add_argument("--rules", action="store_true", help="first imports with the rules on")
    parser.add_argument(
        "--rules-lines", type=int, action="append", help="lines of a --rules import (repeat)"
    )
    parser.add_argument(
        "--rules-repeat", type=int, default=1, help="--rules imports of each (medians)"
    )
    parser.add_argument("--against", help="with --rules: also import with this git revision")
    args = parser.parse_args()
    if args.rules:
        rules_imports(args)
        return

    settings = load_settings(None, {"postgresql.url": args.database_url})
    server = database_url(settings)
    log = ensure_log(OUT / "ingest.log", args.lines, days=args.days, users=args.users)
    size_mb = log.stat().st_size / 1e6
    country_db, asn_db = write_synthetic_geoip(OUT / "geoip")
    geo_env = {"XRAY_GEOIP_COUNTRY_DB": str(country_db), "XRAY_GEOIP_ASN_DB": str(asn_db)}
    plain_runs, geo_runs = [], []
    for _ in range(args.repeat):  # interleaved, so that a slow spell of the machine hits both
        url = _fresh_database(server, BENCH_DB)
        plain_runs.append(_ingest(url, log, {}))
        geo_url = _fresh_database(server, GEO_DB)
        geo_runs.append(_ingest(geo_url, log, geo_env))
    e2e, peak_rss = statistics.median(r[0] for r in plain_runs), max(r[1] for r in plain_runs)
    geo_e2e, geo_rss = statistics.median(r[0] for r in geo_runs), max(r[1] for r in geo_runs)
    with connect(geo_url) as conn:
        places = conn.execute("SELECT count(*), count(country) FROM ip_places").fetchone()
        addresses = conn.execute(
            "SELECT count(DISTINCT src_ip) FROM logs WHERE src_ip IS NOT NULL"
        ).fetchone()[0]

    with connect(url) as conn:
        total = conn.execute(
            "SELECT (SELECT count(*) FROM logs) + (SELECT count(*) FROM dns_queries) + "
            "(SELECT count(*) FROM rejects)"
        ).fetchone()[0]
        assert total == args.lines, (total, args.lines)
    plain, rows = _plain_copy_seconds(url)

    e2e_rate = rows / e2e
    plain_rate = rows / plain
    print(f"input: {args.lines:,} lines, {size_mb:,.1f} MB ({rows:,} access rows)")
    print(
        f"runs without enrichment: {', '.join(f'{r[0]:.2f}' for r in plain_runs)} s; with: "
        f"{', '.join(f'{r[0]:.2f}' for r in geo_runs)} s (medians below)"
    )
    print(
        f"(a) ingest end to end: {e2e:.2f} s = {args.lines / e2e:,.0f} lines/s, "
        f"{e2e_rate:,.0f} logs rows/s (process start, schema check, dims, dns, rejects included)"
    )
    print(
        f"(b) plain COPY of the same logs rows, same partitions and indexes: {plain:.2f} s = "
        f"{plain_rate:,.0f} rows/s"
    )
    print(f"ratio: end to end = {100 * e2e_rate / plain_rate:.0f}% of the plain COPY rate")
    print(f"peak RSS of the ingest process: {peak_rss:,.0f} MB")
    print(
        f"target: >= 85% and < 500 MB: "
        f"{'met' if e2e_rate / plain_rate >= 0.85 and peak_rss < 500 else 'NOT met'}"
    )
    cost = 1 - e2e / geo_e2e
    print(
        f"(c) ingest with country and ASN enrichment: {geo_e2e:.2f} s = "
        f"{args.lines / geo_e2e:,.0f} lines/s; {places[0]:,} places stored ({places[1]:,} with a "
        f"country) for {addresses:,} distinct source addresses; peak RSS {geo_rss:,.0f} MB"
    )
    print(
        f"enrichment cost: {100 * cost:.1f}% of the load rate (target < 10%: "
        f"{'met' if cost < 0.10 else 'NOT met'})"
    )
    with connect(server, autocommit=True) as admin:
        for name in (BENCH_DB, GEO_DB):
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _fresh_database(server: str, name: str, *, migrate: bool = True) -> str:
    """A new empty database; with `migrate`, this tree's schema in it (another revision's
    ingest makes its own)."""
    with connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    if migrate:
        with connect(url) as conn:
            apply_migrations(conn)
            conn.commit()
    return url


def _ingest(
    url: str, log: Path, extra_env: dict[str, str], *, tree: Path | None = None
) -> tuple[float, float]:
    """`xray-pipeline ingest` of `log` into `url` (the code of `tree`, default this one):
    (wall seconds, peak RSS in MB)."""
    elapsed, rss, _ = _ingest_said(url, log, extra_env, tree=tree)
    return elapsed, rss


def _ingest_said(
    url: str, log: Path, extra_env: dict[str, str], *, tree: Path | None = None
) -> tuple[float, float, str]:
    """`_ingest`, with what the ingest printed on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(XRAY_DATABASE_URL=url, XRAY_STATS_OUTPUT=str(OUT / "ingest-stats.jsonl"))
    env.update(extra_env)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryFile() as said:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "xray_pipeline.cli", "--log-level", "WARNING", "ingest",
             "--logfile", str(log)],
            env=env, cwd=tree, stderr=said,
        )  # fmt: skip
        # this child's own peak RSS (RUSAGE_CHILDREN would give the largest of every child)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        said.seek(0)
        text = said.read().decode(errors="replace")
    sys.stderr.write(text)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest failed with exit code {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss / 1024, text


def _plain_copy_seconds(url: str) -> tuple[float, int]:
    """A plain COPY of `url`'s logs rows into a copy of `logs` (same partitions and indexes):
    (seconds, rows). In a child process of its own: the rows it holds would otherwise count in
    the peak RSS of the next ingest this process starts (a forked child's maximum includes the
    parent's pages at the fork)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_plain_copy, (url,))


def _plain_copy(url: str) -> tuple[float, int]:
    with connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
        buffer = io.BytesIO()
        with conn.cursor().copy("COPY (SELECT * FROM logs) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                buffer.write(block)
        conn.execute("CREATE TABLE logs_copy (LIKE logs INCLUDING ALL) PARTITION BY RANGE (ts)")
        bounds = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'logs'::regclass"
        ).fetchall()
        for name, bound in bounds:
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF logs_copy " + bound).format(
                    sql.Identifier(name + "_copy")
                )
            )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor().copy("COPY logs_copy FROM STDIN (FORMAT csv)") as copy:
            copy.write(buffer.getbuffer())
        conn.commit()
        return time.perf_counter() - started, rows


def _worktree(rev: str) -> Path:
    """A checkout of `rev` beside the benchmark's output (made once)."""
    path = OUT / f"worktree-{rev}"
    if not path.exists():
        root = Path(__file__).resolve().parents[1]
        subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=root,
                       check=True, capture_output=True)  # fmt: skip
    return path


def rules_imports(args) -> None:
    settings = load_settings(None, {"postgresql.url": args.database_url})
    server = database_url(settings)
    trees = {"this tree": None} | ({args.against: _worktree(args.against)} if args.against else {})
    for lines in args.rules_lines or [1_000_000, 10_000_000]:
        log = OUT / f"rules-{lines}-200.log"
        marker = log.with_suffix(".done")
        if not marker.exists():
            subprocess.run(
                [sys.executable, "-m", "xray_pipeline.cli", "generate", "--lines", str(lines),
                 "--days", "3", "--sharers", "20", "--out", str(log)],
                check=True, capture_output=True,
            )  # fmt: skip
            marker.touch()
        print(f"input: {lines:,} lines over 3 days, 200 users, 20 sharers and 20 seeders "
              f"planted, {log.stat().st_size / 1e6:,.0f} MB")  # fmt: skip
        for label, tree in trees.items():
            ons, offs, judging = [], [], []
            for _ in range(args.rules_repeat):  # interleaved: a slow spell hits both
                on_url = _fresh_database(server, BENCH_DB, migrate=tree is None)
                on, on_rss, said = _ingest_said(on_url, log, {}, tree=tree)
                ons.append((on, on_rss))
                if found := re.search(r"rules: [\d,]+ rows judged in ([\d.]+) s", said):
                    judging.append(float(found[1]))
                with connect(on_url) as conn:
                    incidents = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
                copy_s, rows = _plain_copy_seconds(on_url)
                offs.append(_ingest(_fresh_database(server, BENCH_DB, migrate=tree is None),
                                    log, {"XRAY_RULES_EVALUATE": "false"}, tree=tree))  # fmt: skip
            on, on_rss = statistics.median(r[0] for r in ons), max(r[1] for r in ons)
            off, off_rss = statistics.median(r[0] for r in offs), max(r[1] for r in offs)
            share = max(0.0, on - off) / on
            own = statistics.median(judging) / on if judging else None
            print(
                f"  {label}: rules on {on:.1f} s, peak RSS {on_rss:,.0f} MB, {incidents} "
                f"incidents; rules off {off:.1f} s, {off_rss:,.0f} MB; the rules' share "
                f"{100 * share:.1f}% (on - off)"
                + (
                    f", {100 * own:.1f}% (the evaluation's own time, "
                    f"{statistics.median(judging):.1f} s)"
                    if own is not None
                    else ""
                )
                + f"; plain COPY of the {rows:,} rows {copy_s:.1f} s: end to end with the "
                f"rules {100 * copy_s / on:.0f}% of the COPY's rate"
                + (f" (medians of {args.rules_repeat})" if args.rules_repeat > 1 else "")
            )
            if tree is None:
                met = on_rss < 500 and (own or share) < 0.10 and copy_s / on >= 0.7
                print(f"  targets (peak RSS < 500 MB, rules < 10% by their own time, >= 70% of "
                      f"COPY): {'met' if met else 'NOT met'}")  # fmt: skip
    with connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )


if __name__ == "__main__":
    main()
