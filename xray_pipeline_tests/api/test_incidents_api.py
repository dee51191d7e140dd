"""The incidents over real HTTP: the filtered list, one incident with its evidence and changes,
acknowledging and closing with the admin token, per-user limits, and the /metrics counts."""

import datetime as dt
from pathlib import Path

import httpx
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.fleet.landing import land, landed_files
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.rules.detect import IpLimitRule, RejectedRule, TaggedRule
from xray_pipeline.core.rules.evaluate import RulesConfig, evaluate
from xray_pipeline_tests.conftest import live_api

ADMIN = "admin-token-for-tests"
T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
CONFIG = RulesConfig(
    ip_limit=IpLimitRule(limit=2, window_minutes=10, count_by="address"),
    tagged=TaggedRule(tags=("TORRENT",), limit=3, window_minutes=10),
    rejected=RejectedRule(limit=100, window_minutes=5),
)


def line(second: int, user: str, ip: str, tag: str = "direct") -> str:
    ts = (T0 + dt.timedelta(seconds=second)).strftime("%Y/%m/%d %H:%M:%S")
    return f"{ts} from {ip}:1 accepted tcp:a.example:443 [in >> {tag}] email: {user}\n"


@pytest.fixture
def api(fresh_db_url: str, tmp_path: Path):
    """A sharer over two nodes, a seeder on one, an honest user; the rules evaluated."""
    landing = tmp_path / "landed"
    n1 = [line(i, "sharer", f"192.0.2.{i}") for i in range(2)]
    n1 += [line(10 + i, "seeder", "198.51.100.9", tag="TORRENT") for i in range(5)]
    n2 = [line(5 + i, "sharer", f"203.0.113.{i}") for i in range(2)]
    n2 += [line(20 + i, "honest", "198.51.100.1") for i in range(5)]
    for node, lines in (("n1", n1), ("n2", n2)):
        land(
            landing, node, f"64:{node}:abc", "/var/log/xray/access.log", 0, "".join(lines).encode()
        )
    with connect(fresh_db_url) as conn:
        for path, node in landed_files(landing):
            ingest_files(conn, [path], timezone="UTC", batch_size=1 << 20, node=node)
        evaluate(conn, T0, T0 + dt.timedelta(minutes=1), CONFIG)
    with (
        live_api(fresh_db_url, landing_dir=landing, admin_token=ADMIN) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def test_the_list_filters_by_state_rule_user_node_and_time(api: httpx.Client):
    everything = api.get("/api/incidents").json()
    assert everything["total"] == 2
    assert {(i["rule"], i["subject"]) for i in everything["items"]} == {
        ("ip_limit", "sharer"),
        ("tagged", "seeder"),
    }
    sharer = api.get("/api/incidents", params={"rule": "ip_limit"}).json()["items"]
    assert [(i["subject"], i["peak"], i["limit"], i["nodes"]) for i in sharer] == [
        ("sharer", 4, 2, ["n1", "n2"])
    ]
    assert api.get("/api/incidents", params={"user": "seeder"}).json()["total"] == 1
    assert api.get("/api/incidents", params={"node": "n2"}).json()["total"] == 1  # the sharer
    assert api.get("/api/incidents", params={"open": "false"}).json()["total"] == 0
    after = {"from": (T0 + dt.timedelta(hours=1)).isoformat()}
    assert api.get("/api/incidents", params=after).json()["total"] == 0
    before = {"to": (T0 - dt.timedelta(hours=1)).isoformat()}
    assert api.get("/api/incidents", params=before).json()["total"] == 0
    bad = api.get("/api/incidents", params={"rule": "nope"})
    assert bad.status_code == 422
    naive = api.get("/api/incidents", params={"from": "2024-05-01T00:00:00"})
    assert naive.status_code == 422 and "time zone" in naive.text


def test_one_incident_with_its_evidence_and_changes(api: httpx.Client):
    [item] = api.get("/api/incidents", params={"rule": "ip_limit"}).json()["items"]
    one = api.get(f"/api/incidents/{item['id']}").json()
    units = {u["unit"]: u for u in one["evidence"]}
    assert sorted(units) == ["192.0.2.0", "192.0.2.1", "203.0.113.0", "203.0.113.1"]
    assert units["203.0.113.1"]["nodes"] == ["n2"] and units["192.0.2.0"]["connections"] == 1
    assert [c["change"] for c in one["changes"]] == ["opened", "escalated"]  # 4 = 2 x 2
    assert one["changes"][0]["deliveries"] == []  # no target configured
    assert api.get("/api/incidents/999999").status_code == 404


def test_acknowledge_and_close_need_the_admin_token(api: httpx.Client, fresh_db_url: str):
    [item] = api.get("/api/incidents", params={"user": "seeder"}).json()["items"]
    path = f"/api/admin/incidents/{item['id']}"
    assert api.post(f"{path}/acknowledge").status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    acked = api.post(f"{path}/acknowledge", headers=admin)
    assert acked.status_code == 200 and acked.json()["acknowledged_at"]
    closed = api.post(f"{path}/close", headers=admin)
    assert closed.status_code == 200
    again = api.post(f"{path}/close", headers=admin)
    assert again.status_code == 409 and "closed already" in again.json()["detail"]
    assert api.post("/api/admin/incidents/999999/close", headers=admin).status_code == 404
    one = api.get(f"/api/incidents/{item['id']}").json()
    assert one["state"] == "closed" and one["acknowledged_at"]
    assert [c["change"] for c in one["changes"]] == ["opened", "closed"]


def test_per_user_limits_over_the_admin_api(api: httpx.Client, fresh_db_url: str):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert api.put("/api/admin/limits/sharer", json={"ip_limit": 5}).status_code == 401
    done = api.put("/api/admin/limits/sharer", json={"ip_limit": 5}, headers=admin)
    assert done.status_code == 200
    assert api.get("/api/admin/limits", headers=admin).json() == {"sharer": 5}
    unknown = api.put("/api/admin/limits/nobody", json={"ip_limit": 5}, headers=admin)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert (
        api.put("/api/admin/limits/sharer", json={"ip_limit": 0}, headers=admin).status_code == 422
    )
    # the next evaluation uses it: 4 sources are within 5
    with connect(fresh_db_url) as conn:
        conn.execute("DELETE FROM incidents")
        conn.commit()
        found = evaluate(conn, T0, T0 + dt.timedelta(minutes=1), CONFIG).recorded.opened
        rules = conn.execute("SELECT rule FROM incidents WHERE id = ANY(%s)", (found,)).fetchall()
    assert rules == [("tagged",)]
    assert api.delete("/api/admin/limits/sharer", headers=admin).status_code == 200
    assert api.get("/api/admin/limits", headers=admin).json() == {}


def test_metrics_count_incidents_by_rule_and_state(api: httpx.Client):
    text = api.get("/metrics").text
    assert 'xray_incidents{rule="ip_limit",state="open"} 1.0' in text
    assert 'xray_incidents{rule="tagged",state="open"} 1.0' in text
