"""`node` narrows the stats, the series and the users list to one node's rows, as it does the
log pages, whether the days come from the rollups or from `logs`."""

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from xray_pipeline.api.main import create_app
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

NODES = {"edge-1": 1_500, "edge-2": 700}
WINDOW = {"from": "2025-11-17T00:00:00Z", "to": "2025-11-19T00:00:00Z"}


@pytest.fixture(scope="module")
def data_url(db_url: str, tmp_path_factory) -> str:
    folder = Path(tmp_path_factory.mktemp("nodes"))
    with connect(db_url) as conn:
        for i, (node, lines) in enumerate(NODES.items()):
            log = folder / f"{node}.log"
            write_log(GeneratorConfig(lines=lines, days=2, users=10 + 10 * i, seed=i), log)
            ingest_files(conn, [log], timezone="UTC", batch_size=64 * 1024, node=node)
        for day in (dt.date(2025, 11, 17), dt.date(2025, 11, 18)):
            for table in ROLLUPS:
                rebuild_rollup(conn, table, day, "UTC")
    return db_url


@pytest.fixture(scope="module")
def client(data_url: str):
    with TestClient(create_app(data_url)) as c:
        yield c


def truth(url: str, query: str, node: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            query.format(
                rows="logs l JOIN sources s ON s.id = l.source_id "
                "LEFT JOIN users u ON u.id = l.user_id WHERE s.node = %(node)s"
            ),
            {"node": node},
        ).fetchall()


@pytest.mark.parametrize("node", list(NODES))
def test_stats_of_one_node(client, data_url, node):
    body = client.get("/api/logs/stats", params={**WINDOW, "node": node}).json()
    [(connections, rejected, users)] = truth(
        data_url,
        "SELECT count(*), count(*) FILTER (WHERE l.status = 'rejected'), "
        "count(DISTINCT l.user_id) FROM {rows}",
        node,
    )
    assert (body["connections"], body["rejected"], body["unique_users"]) == (
        connections,
        rejected,
        users,
    )
    everyone = client.get("/api/logs/stats", params=WINDOW).json()
    other = client.get("/api/logs/stats", params={**WINDOW, "node": "no-such-node"}).json()
    assert 0 < body["connections"] < everyone["connections"] and other["connections"] == 0
    assert everyone["days_from_rollups"] == 2 and body["days_from_rollups"] == 0


@pytest.mark.parametrize("bucket", ["hour", "day"])
def test_series_of_one_node(client, data_url, bucket):
    body = client.get(
        "/api/timeseries", params={**WINDOW, "node": "edge-2", "bucket": bucket}
    ).json()
    expected = truth(
        data_url,
        f"SELECT date_trunc('{bucket}', l.ts, 'UTC'), count(*) FROM {{rows}} GROUP BY 1 ORDER BY 1",
        "edge-2",
    )
    got = [(dt.datetime.fromisoformat(p["t"]), p["connections"]) for p in body["points"]]
    assert got == expected and len(got) > 1


def test_users_of_one_node(client, data_url):
    body = client.get("/api/users", params={"node": "edge-2", "limit": 500}).json()
    expected = dict(
        truth(
            data_url,
            "SELECT u.email, count(*) FROM {rows} AND l.user_id IS NOT NULL GROUP BY 1",
            "edge-2",
        )
    )
    assert {i["email"]: i["connections"] for i in body["items"]} == expected
    assert body["total"] == len(expected)
    seen = [i["last_seen"] for i in body["items"]]
    assert seen == sorted(seen, reverse=True)
    page = client.get("/api/users", params={"node": "edge-2", "limit": 3, "offset": 3}).json()
    assert page["total"] == len(expected) and len(page["items"]) == 3
    past = client.get("/api/users", params={"node": "edge-2", "offset": 1000}).json()
    assert past == {"items": [], "total": len(expected)}
    nobody = client.get("/api/users", params={"node": "no-such-node"}).json()
    assert nobody == {"items": [], "total": 0}
