"""The API sidecar over real HTTP semantics (Starlette's TestClient runs the lifespan)."""

import datetime as dt
import itertools
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from xray_pipeline.api.main import create_app
from xray_pipeline.api.routers.logs import EXACT_COUNT_LIMIT, SEARCH_COUNT_LIMIT
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.partitions import ensure_partitions
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log


@pytest.fixture(scope="module")
def data_url(db_url: str, tmp_path_factory) -> str:
    log = Path(tmp_path_factory.mktemp("api")) / "access.log"
    write_log(GeneratorConfig(lines=3_000, days=2, users=25, other_share=0.3), log)
    with connect(db_url) as conn:
        ingest_files(conn, [log], timezone="UTC", batch_size=128 * 1024, node="edge-1")
    return db_url


@pytest.fixture(scope="module")
def client(data_url: str):
    with TestClient(create_app(data_url)) as c:
        yield c


def truth(url: str, where: str = "true", params: tuple = ()) -> int:
    with connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM logs l LEFT JOIN users u ON u.id = l.user_id "
            "LEFT JOIN endpoints e ON e.id = l.endpoint_id LEFT JOIN tags ti ON "
            "ti.id = l.inbound_tag_id LEFT JOIN tags tout ON tout.id = l.outbound_tag_id "
            f"LEFT JOIN protocols p ON p.id = l.dest_protocol_id WHERE {where}",
            params,
        ).fetchone()[0]


@pytest.mark.slow  # waits for the pool's timeout on a server that is not there
def test_health_and_readiness(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ready"}
    with TestClient(create_app("postgresql://u@127.0.0.1:1/x")) as down:
        assert down.get("/health").status_code == 200
        ready = down.get("/health/ready")
        assert ready.status_code == 503 and "unavailable" in ready.json()["status"]
        logs = down.get("/api/logs")
        assert logs.status_code == 503 and "unavailable" in logs.json()["detail"]


def test_first_page_newest_first_with_exact_total(client, data_url):
    page = client.get("/api/logs").json()
    assert len(page["items"]) == 50
    assert page["total"] == truth(data_url) and page["total_is_estimate"] is False
    stamps = [item["ts"] for item in page["items"]]
    assert stamps == sorted(stamps, reverse=True)
    assert page["items"][0]["node"] == "edge-1"


@pytest.mark.parametrize(
    ("params", "where", "args"),
    [
        ({"status": "rejected"}, "l.status = 'rejected'", ()),
        ({"protocol": "udp"}, "p.name = 'udp'", ()),
        ({"tag": "direct"}, "(ti.name = 'direct' OR tout.name = 'direct')", ()),
        ({"user": "2.user1"}, "u.email = '2.user1'", ()),
        (
            {"search": "site1"},
            "(u.email ILIKE '%%site1%%' OR e.host ILIKE '%%site1%%' OR "
            "host(l.src_ip) LIKE '%%site1%%' OR l.src_host ILIKE '%%site1%%')",
            (),
        ),
        (
            {"search": "site"},
            "(u.email ILIKE '%%site%%' OR e.host ILIKE '%%site%%' OR l.src_host ILIKE '%%site%%')",
            (),
        ),
        (
            {"search": "2001:DB8"},
            "(u.email ILIKE '%%2001:db8%%' OR e.host ILIKE '%%2001:db8%%' OR "
            "host(l.src_ip) LIKE '%%2001:db8%%' OR l.src_host ILIKE '%%2001:db8%%')",
            (),
        ),
        ({"from": "2025-11-18T00:00:00Z"}, "l.ts >= '2025-11-18T00:00:00Z'", ()),
        (
            {"from": "2025-11-17T06:00:00Z", "to": "2025-11-17T07:00:00Z", "status": "accepted"},
            "l.ts >= '2025-11-17T06:00Z' AND l.ts < '2025-11-17T07:00Z' AND l.status = 'accepted'",
            (),
        ),
    ],
)
def test_filters_match_sql_ground_truth(client, data_url, params, where, args):
    expected = truth(data_url, where, args)
    assert expected > 0
    seen = []
    cursor = None
    while True:
        query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/logs", params=query).json()
        if cursor is None:  # the first page's total: exact up to the cap, else flagged
            cap = SEARCH_COUNT_LIMIT if "search" in params else EXACT_COUNT_LIMIT
            if expected <= cap:
                assert (page["total"], page["total_is_estimate"]) == (expected, False)
            else:
                assert page["total_is_estimate"] and page["total"] > cap
        seen += [(i["source"], i["byte_offset"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == expected


def test_cursor_paging_never_repeats_or_skips_while_rows_arrive(client, data_url, same_day):
    first = client.get("/api/logs", params={"limit": 100}).json()
    # a newer row arrives between two pages
    with connect(data_url) as conn:
        ensure_partitions(conn, [dt.datetime.now(dt.UTC).date()], "UTC")
        conn.execute(
            "INSERT INTO logs (ts, source_id, byte_offset, status) "
            "SELECT now(), id, 999999999, 'accepted' FROM sources LIMIT 1"
        )
        conn.commit()
    seen = [(i["source"], i["byte_offset"]) for i in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/api/logs", params={"limit": 500, "cursor": cursor}).json()
        seen += [(i["source"], i["byte_offset"]) for i in page["items"]]
        cursor = page["next_cursor"]
    with connect(data_url) as conn:
        conn.execute("DELETE FROM logs WHERE byte_offset = 999999999")
        conn.commit()
    assert len(seen) == len(set(seen)) == truth(data_url)


def test_offset_pages_are_consistent(client):
    a = client.get("/api/logs", params={"limit": 20, "offset": 0}).json()["items"]
    b = client.get("/api/logs", params={"limit": 20, "offset": 20}).json()["items"]
    both = client.get("/api/logs", params={"limit": 40}).json()["items"]
    assert a + b == both


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": -5}, 422),
        ({"limit": 501}, 422),
        ({"limit": "many"}, 422),
        ({"offset": -1}, 422),
        ({"from": "yesterday"}, 422),
        ({"from": "2025-01-01T00:00:00"}, 422),  # no zone: ambiguous
        ({"status": "maybe"}, 422),
        ({"cursor": "not-a-cursor"}, 422),
        ({"search": "x" * 201}, 422),
        ({"search": "'; DROP TABLE logs; --"}, 200),
        ({"user": "' OR 1=1 --"}, 200),
        ({"search": "100%_\\"}, 200),
    ],
)
def test_bad_parameters_are_422_never_500(client, params, status):
    response = client.get("/api/logs", params=params)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["detail"]
    else:
        assert response.json()["items"] == []


def test_bearer_token(data_url):
    with TestClient(create_app(data_url, token="s3cret")) as c:
        assert c.get("/api/logs").status_code == 401
        assert c.get("/api/logs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/api/logs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200


def test_the_api_role_can_read_but_not_write(data_url):
    import psycopg

    from xray_pipeline.core.db.session import with_database

    params = psycopg.conninfo.conninfo_to_dict(data_url)
    role_url = with_database(data_url, params["dbname"]).replace("://postgres@", "://xray_api@")
    with TestClient(create_app(role_url)) as c:
        assert c.get("/api/logs", params={"limit": 1}).status_code == 200
    with psycopg.connect(role_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM logs")


def test_openapi_documents_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/health/ready", "/api/logs"} <= set(paths)
    limit = next(p for p in paths["/api/logs"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500


def sql_stats(url: str, lo: str, hi: str) -> dict:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'rejected'), "
            "count(DISTINCT user_id) "
            "FROM logs WHERE ts >= %s AND ts < %s",
            (lo, hi),
        ).fetchone()
        protocols = dict(
            conn.execute(
                "SELECT coalesce(p.name, 'unknown'), count(*) FROM logs l LEFT JOIN protocols p "
                "ON p.id = l.dest_protocol_id WHERE ts >= %s AND ts < %s GROUP BY 1",
                (lo, hi),
            ).fetchall()
        )
        outbound, inbound = (
            dict(
                conn.execute(
                    "SELECT coalesce(t.name, '(none)'), count(*) FROM logs l LEFT JOIN tags t "
                    f"ON t.id = l.{column} WHERE ts >= %s AND ts < %s GROUP BY 1",
                    (lo, hi),
                ).fetchall()
            )
            for column in ("outbound_tag_id", "inbound_tag_id")
        )
    return {
        "connections": row[0],
        "rejected": row[1],
        "accepted": row[0] - row[1],
        "unique_users": row[2],
        "protocols": protocols,
        "outbound_tags": outbound,
        "inbound_tags": inbound,
    }


def rebuild_rollups(url: str, tables: tuple[str, ...] = ROLLUPS) -> None:
    with connect(url) as conn:
        for day in (dt.date(2025, 11, 17), dt.date(2025, 11, 18)):
            for table in tables:
                rebuild_rollup(conn, table, day, "UTC")


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        ("2025-11-17T00:00:00Z", "2025-11-19T00:00:00Z"),  # day 1 from rollups, day 2 too
        ("2025-11-17T05:30:00Z", "2025-11-18T13:15:00Z"),  # partial days: live
    ],
)
def test_stats_match_sql_ground_truth(client, data_url, lo, hi):
    rebuild_rollups(data_url)
    got = client.get("/api/logs/stats", params={"from": lo, "to": hi}).json()
    expected = sql_stats(data_url, lo, hi)
    for key, value in expected.items():
        assert got[key] == value, key
    if lo.endswith("00:00:00Z"):
        assert got["days_from_rollups"] == 2


def sql_series(url: str, bucket: str, where: str = "true") -> list[tuple[str, int, int]]:
    with connect(url) as conn:
        rows = conn.execute(
            f"SELECT date_trunc('{bucket}', l.ts, 'UTC'), count(*), "
            "count(*) FILTER (WHERE l.status = 'rejected') FROM logs l "
            "LEFT JOIN tags ti ON ti.id = l.inbound_tag_id "
            f"LEFT JOIN tags tout ON tout.id = l.outbound_tag_id WHERE {where} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return [(t.isoformat(), n, r) for t, n, r in rows]


@pytest.mark.parametrize(
    "rolled", [(), ("hourly_traffic", "daily_totals")], ids=["live", "rollups"]
)
@pytest.mark.parametrize("bucket", ["day", "hour"])
def test_timeseries_match_sql_ground_truth(client, data_url, rolled, bucket):
    with connect(data_url) as conn:
        conn.execute("DELETE FROM hourly_traffic")
        conn.execute("DELETE FROM daily_totals")
        conn.commit()
    rebuild_rollups(data_url, rolled)
    window = {"from": "2025-11-17T00:00Z", "to": "2025-11-19T00:00Z"}
    for params, where in [
        ({}, "true"),
        ({"tag": "direct"}, "(ti.name = 'direct' OR tout.name = 'direct')"),
    ]:
        got = client.get("/api/timeseries", params={"bucket": bucket, **window, **params}).json()
        points = [
            (dt.datetime.fromisoformat(p["t"]).isoformat(), p["connections"], p["rejected"])
            for p in got["points"]
        ]
        assert points == sql_series(data_url, bucket, where)


def test_stats_read_live_where_a_rollup_lacks_the_day(client, data_url):
    with connect(data_url) as conn:
        conn.execute("DELETE FROM daily_user_ips")
        conn.commit()
    rebuild_rollups(data_url, ("daily_totals",))
    lo, hi = "2025-11-17T00:00:00Z", "2025-11-19T00:00:00Z"
    got = client.get("/api/logs/stats", params={"from": lo, "to": hi}).json()
    assert got["days_from_rollups"] == 0
    assert got["unique_users"] == sql_stats(data_url, lo, hi)["unique_users"]


def test_timeseries_buckets_add_up(client, data_url):
    day = client.get("/api/timeseries", params={"bucket": "day"}).json()["points"]
    hour = client.get("/api/timeseries", params={"bucket": "hour", "user": "2.user1"}).json()
    assert sum(p["connections"] for p in day) == truth(data_url)
    assert len(day) == 2
    assert sum(p["connections"] for p in hour["points"]) == truth(data_url, "u.email = '2.user1'")
    too_long = client.get(
        "/api/timeseries",
        params={"bucket": "hour", "from": "2020-01-01T00:00Z", "to": "2025-01-01T00:00Z"},
    )
    assert too_long.status_code == 422
    assert client.get("/api/timeseries", params={"bucket": "week"}).status_code == 422


def test_users_list_detail_and_ips_window(client, data_url):
    rebuild_rollups(data_url, ("daily_user_ips",))
    with connect(data_url) as conn:
        email, n, last, first = conn.execute(
            "SELECT u.email, count(*), max(l.ts), min(l.ts) FROM logs l JOIN users u "
            "ON u.id = l.user_id GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
        ips = conn.execute(
            "SELECT count(DISTINCT coalesce(host(src_ip), src_host)) FROM logs l JOIN users u "
            "ON u.id = l.user_id WHERE u.email = %s AND ts > %s AND ts <= %s",
            (email, last - dt.timedelta(hours=6), last),
        ).fetchone()[0]
        expected = [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT u.email, count(*), max(l.ts), "
                "count(DISTINCT coalesce(host(src_ip), src_host, '')) FROM logs l "
                "JOIN users u ON u.id = l.user_id GROUP BY 1 ORDER BY 3 DESC, 1"
            ).fetchall()
        ]
    listing = client.get("/api/users", params={"limit": 500}).json()
    row = next(item for item in listing["items"] if item["email"] == email)
    assert row["connections"] == n and listing["total"] == 25
    paged = []
    for offset in range(0, 30, 10):
        page = client.get("/api/users", params={"limit": 10, "offset": offset}).json()
        paged += [
            (i["email"], i["connections"], dt.datetime.fromisoformat(i["last_seen"]),
             i["source_ips"])
            for i in page["items"]
        ]  # fmt: skip
    assert paged == expected
    window = {"from": "2025-11-01T00:00Z", "to": "2025-12-01T00:00Z"}
    detail = client.get(f"/api/users/{email}", params=window).json()
    assert detail["connections"] == n
    assert dt.datetime.fromisoformat(detail["last_seen"]) == last
    assert dt.datetime.fromisoformat(detail["first_seen"]) == first
    assert sum(s["connections"] for s in detail["sessions"]) == n
    assert sum(i["connections"] for i in detail["source_ips"]) == n
    with connect(data_url) as conn:
        top = conn.execute(
            "SELECT e.host, e.port, count(*) FROM logs l JOIN endpoints e ON e.id = l.endpoint_id "
            "JOIN users u ON u.id = l.user_id WHERE u.email = %s GROUP BY 1, 2 "
            "ORDER BY 3 DESC, 1, 2 LIMIT 10",
            (email,),
        ).fetchall()
    got_top = [(d["host"], d["port"], d["connections"]) for d in detail["top_destinations"]]
    assert got_top == [tuple(r) for r in top] and len(top) == 10
    # with its rollups the whole days come from them (above: the live rows): the same answer,
    # sessions included, at the shortest gap the quarter hours serve (15 minutes) and below it
    gaps = [{**window, "session_gap_minutes": m} for m in (1, 15, 30)]
    before = [client.get(f"/api/users/{email}", params=p).json() for p in gaps]
    rebuild_rollups(data_url, ("daily_user_destinations", "daily_user_activity"))
    after = [client.get(f"/api/users/{email}", params=p).json() for p in gaps]
    assert after == before and before[2] == detail
    assert [len(d["sessions"]) for d in before] == sorted({len(d["sessions"]) for d in before})[
        ::-1
    ]
    assert len(before[0]["sessions"]) > len(before[1]["sessions"]) > 1
    with connect(data_url) as conn:  # the sessions of the single connections, cut here
        times = [
            r[0]
            for r in conn.execute(
                "SELECT ts FROM logs l JOIN users u ON u.id = l.user_id WHERE u.email = %s "
                "ORDER BY ts",
                (email,),
            ).fetchall()
        ]
    for minutes, got in zip((1, 15, 30), after, strict=True):
        cuts = [0, *(i for i in range(1, len(times))
                     if times[i] - times[i - 1] > dt.timedelta(minutes=minutes)), len(times)]  # fmt: skip
        expected = [(times[a], times[b - 1], b - a) for a, b in itertools.pairwise(cuts)]
        sessions = [
            (dt.datetime.fromisoformat(x["start"]), dt.datetime.fromisoformat(x["end"]),
             x["connections"]) for x in got["sessions"]
        ]  # fmt: skip
        assert sessions == expected[::-1][:200], minutes
    signal = client.get(
        f"/api/users/{email}/ips", params={"window": 360, "at": last.isoformat()}
    ).json()
    assert signal["distinct_ips"] == ips
    assert client.get("/api/users/nobody-here").status_code == 404
    assert client.get(f"/api/users/{email}/ips", params={"window": 0}).status_code == 422


def test_dashboard_and_freshness(client, data_url):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/app.css", "/static/vendor/uplot/uPlot.iife.min.js"):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/static/nothing.js").status_code == 404
    with connect(data_url) as conn:
        newest = conn.execute("SELECT max(ts) FROM logs").fetchone()[0]
    fresh = client.get("/api/freshness").json()
    assert dt.datetime.fromisoformat(fresh["newest_row"]) == newest
    lag = (dt.datetime.now(dt.UTC) - newest).total_seconds()
    assert abs(fresh["lag_seconds"] - lag) < 60


def test_metrics_in_prometheus_text(client):
    client.get("/api/logs", params={"limit": 1})
    client.get("/api/logs", params={"limit": 0})
    text = client.get("/metrics").text
    assert 'xray_api_requests_total{method="GET",route="/api/logs",status="200"}' in text
    assert 'status="422"' in text
    assert "xray_api_request_seconds_count" in text
    assert 'xray_api_pool{figure="pool_size"}' in text
    lag = float(text.split("xray_ingest_lag_seconds ")[-1].split("\n")[0])
    assert lag > 0


def test_nodes_lists_each_registered_node_with_its_freshness(client, data_url: str):
    from xray_pipeline.core.fleet.nodes import add_node

    with connect(data_url) as conn:
        for name in ("edge-1", "idle"):
            if not conn.execute("SELECT 1 FROM nodes WHERE name = %s", (name,)).fetchone():
                add_node(conn, name)
        newest = conn.execute("SELECT max(ts) FROM logs").fetchone()[0]
        paths = [r[0] for r in conn.execute("SELECT path FROM sources WHERE node = 'edge-1'")]
    body = client.get("/api/nodes").json()
    assert [n["name"] for n in body] == ["edge-1", "idle"]
    edge, idle = body
    assert edge["lines_today"] == 3_000  # the module's lines, all loaded today
    assert edge["bytes_today"] == sum(Path(p).stat().st_size for p in paths)
    assert edge["bytes_waiting"] == 0  # a local file: nothing landed
    assert dt.datetime.fromisoformat(edge["newest_line"]) == newest
    assert edge["lag_seconds"] > 0
    assert idle["newest_line"] is None and idle["lines_today"] == 0
    assert all("token" not in key for node in body for key in node)
