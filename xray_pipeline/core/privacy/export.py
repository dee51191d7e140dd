"""`export`: what the pipeline keeps about one user (an access request), from PostgreSQL and,
for the days only there, the archive."""

import datetime as dt

import polars as pl
import psycopg
from psycopg import sql

from xray_pipeline.core.archive.read import cold_days, day_files, scan
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import LOGS
from xray_pipeline.core.privacy.forget import USER_ROLLUPS, email_key, email_pattern


def export_user(
    conn: psycopg.Connection, email: str, *, timezone: str, archive: ArchiveStore | None = None
) -> dict:
    """What the pipeline keeps about `email`: its rows by day, its sources with their places,
    its destinations, nodes, rollup rows and rejects mentioning it (an access request); the
    days only in the archive are read there."""
    report: dict = {
        "email": email,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "forgotten": conn.execute(
            "SELECT forgotten_at FROM forgotten_users WHERE email_sha256 = %s",
            (email_key(email),),
        ).fetchone()
        is not None,
    }
    row = conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()
    report["rejects"] = conn.execute(
        "SELECT count(*) FROM rejects WHERE raw ~ %s", (email_pattern(email),)
    ).fetchone()[0]
    if row is None:
        report["found"] = False
        return report
    uid = row[0]
    report["found"] = True
    query = conn.execute(
        """
        SELECT (ts AT TIME ZONE %(tz)s)::date AS day, count(*) AS rows,
               min(ts) AS first_seen, max(ts) AS last_seen
        FROM logs WHERE user_id = %(u)s GROUP BY 1 ORDER BY 1
        """,
        {"tz": timezone, "u": uid},
    )
    report["log_rows_by_day"] = [
        {"day": d.isoformat(), "rows": n, "first_seen": f.isoformat(), "last_seen": la.isoformat()}
        for d, n, f, la in query
    ]
    rolled = [
        r[0]
        for r in conn.execute("SELECT DISTINCT day FROM daily_user_ips WHERE user_id = %s", (uid,))
    ]
    report["sources"] = [
        {"source": s, "country": c, "asn": a, "as_org": o, "connections": int(n),
         "first_seen": f.isoformat(), "last_seen": la.isoformat()}
        for s, c, a, o, n, f, la in conn.execute(
            """
            SELECT x.source, p.country, p.asn, an.org, sum(x.n), min(x.f), max(x.l) FROM (
                SELECT source, connections AS n, first_seen AS f, last_seen AS l
                FROM daily_user_ips WHERE user_id = %(u)s
                UNION ALL
                SELECT coalesce(host(src_ip), src_host, ''), count(*), min(ts), max(ts)
                FROM logs l WHERE user_id = %(u)s
                AND NOT (l.ts AT TIME ZONE %(tz)s)::date = ANY(%(rolled)s)
                GROUP BY 1
            ) x LEFT JOIN ip_places p ON p.address = x.source
            LEFT JOIN asns an ON an.asn = p.asn
            GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC
            """,
            {"u": uid, "tz": timezone, "rolled": rolled},
        )
    ]  # fmt: skip
    report["destinations"] = [
        {"host": h, "port": p, "connections": int(n)}
        for h, p, n in conn.execute(
            "SELECT e.host, e.port, count(*) FROM logs l JOIN endpoints e ON e.id = l.endpoint_id "
            "WHERE l.user_id = %s GROUP BY 1, 2 ORDER BY 3 DESC, 1",
            (uid,),
        )
    ]
    report["nodes"] = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT coalesce(s.node, '') FROM logs l JOIN sources s "
            "ON s.id = l.source_id WHERE l.user_id = %s ORDER BY 1",
            (uid,),
        )
    ]
    if archive is not None:
        _export_archived(conn, archive, email, timezone, report)
    report["rollup_rows"] = {
        table: conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(sql.Identifier(table)),
            (uid,),
        ).fetchone()[0]
        for table in USER_ROLLUPS
    }
    conn.commit()
    return report


def _export_archived(
    conn: psycopg.Connection, archive: ArchiveStore, email: str, timezone: str, report: dict
) -> None:
    """Add the rows of `email` on the days only in the archive to `report`."""
    days = cold_days(conn)
    if not days:
        return
    rows = (
        scan(archive, day_files(conn, LOGS, days), LOGS)
        .filter(pl.col("user") == email)
        .select("ts", "node", "dest_host", "dest_port")
        .collect()
    )
    if rows.is_empty():
        return
    by_day = (
        rows.group_by(pl.col("ts").dt.convert_time_zone(timezone).dt.date().alias("day"))
        .agg(
            pl.len().alias("rows"),
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
        )
        .sort("day")
    )
    report["log_rows_by_day"] = sorted(
        report["log_rows_by_day"]
        + [
            {
                "day": d.isoformat(),
                "rows": n,
                "first_seen": f.isoformat(),
                "last_seen": la.isoformat(),
                "archived": True,
            }
            for d, n, f, la in by_day.iter_rows()
        ],
        key=lambda r: r["day"],
    )
    counted = {(d["host"], d["port"]): d["connections"] for d in report["destinations"]}
    for host, port, n in rows.group_by("dest_host", "dest_port").len().iter_rows():
        if host is not None:
            counted[(host, port)] = counted.get((host, port), 0) + n
    report["destinations"] = [
        {"host": h, "port": p, "connections": n}
        for (h, p), n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0][0]))
    ]
    nodes = set(report["nodes"]) | {n or "" for n in rows["node"].unique().to_list()}
    report["nodes"] = sorted(nodes)
