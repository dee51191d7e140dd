"""The fleet's write side over real HTTP: a node lands ranges with its own token, each once,
in order; every other request is refused with its status and lands nothing."""

import gzip
import math
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import live_api

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.fleet.landing import landed_sources
from xray_pipeline.core.fleet.nodes import add_node
from xray_pipeline.core.ingest.batch import load_chunk
from xray_pipeline.core.ingest.references import register_source
from xray_pipeline.core.parse import parse_chunk

LINE = b"2025/01/01 00:00:00 from 192.0.2.1:1 accepted tcp:a.example:443 email: u\n"


@pytest.fixture
def center(fresh_db_url: str, tmp_path: Path):
    with connect(fresh_db_url) as conn:
        tokens = {name: add_node(conn, name) for name in ("n1", "n2")}
    root = tmp_path / "landed"
    with live_api(fresh_db_url, landing_dir=root, max_range_bytes=64 * 1024) as url:
        yield url, tokens, root


def post(
    url: str, node: str, token: str | None, start: int, body: bytes, identity="64:12:abcd",
    **headers,
):  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{url}/api/ship/{node}/ranges",
        params={"identity": identity, "start": start, "path": "/var/log/xray/access.log"},
        content=body,
        headers={**auth, **headers},
        timeout=10,
    )


def test_a_node_lands_its_ranges_once_and_in_order(center):
    url, tokens, root = center
    gz = {"Content-Encoding": "gzip", "User-Agent": "xray-pipeline-ship/test"}
    first = post(url, "n1", tokens["n1"], 0, gzip.compress(LINE * 2), **gz)
    assert first.status_code == 200 and first.json()["end"] == 2 * len(LINE)
    again = post(url, "n1", tokens["n1"], 0, gzip.compress(LINE * 2), **gz)
    assert again.status_code == 200 and again.json()["end"] == 2 * len(LINE)
    gap = post(url, "n1", tokens["n1"], 10 * len(LINE), LINE)
    assert gap.status_code == 409 and gap.json()["expected"] == 2 * len(LINE)
    listed = httpx.get(
        f"{url}/api/ship/n1/sources", headers={"Authorization": f"Bearer {tokens['n1']}"}
    )
    assert listed.json() == [{"identity": "64:12:abcd", "end": 2 * len(LINE)}]
    [source] = landed_sources(root, "n1").values()
    assert source.path.read_bytes() == LINE * 2
    nodes = httpx.get(f"{url}/api/nodes").json()
    assert nodes[0]["name"] == "n1" and nodes[0]["shipper_version"] == "xray-pipeline-ship/test"
    assert nodes[0]["last_contact"] is not None and nodes[1]["last_contact"] is None


@pytest.mark.parametrize(
    ("node", "who", "body", "headers", "status"),
    [
        ("n1", None, LINE, {}, 401),
        ("n1", "unknown", LINE, {}, 401),
        ("n1", "n2", LINE, {}, 403),
        ("n1", "n1", LINE * 2000, {}, 413),
        ("n1", "n1", gzip.compress(LINE * 2000), {"Content-Encoding": "gzip"}, 413),
        ("n1", "n1", LINE[:-1], {}, 422),
        ("n1", "n1", LINE, {"Content-Encoding": "br"}, 415),
        ("%2E%2E", "n1", LINE, {}, 422),  # sent as is: the server sees '..'
        ("n1%2F..%2Fn2", "n1", LINE, {}, 404),  # the server sees n1/../n2: no such route
        ("n1/../n2", "n1", LINE, {}, 403),  # the client resolves it to n2: not n1's
    ],
    ids=[
        "no token",
        "unknown token",
        "another node's token",
        "too large",
        "inflates too large",
        "not at a line end",
        "unknown encoding",
        "dot-dot node",
        "slash in node",
        "dot segments",
    ],
)
@pytest.mark.parametrize("known", [False, True], ids=["first call", "token known"])
def test_refused_requests_say_why_and_land_nothing(center, node, who, body, headers, status, known):
    """The same answers on a node's first call (the route) and once its token is known to
    the sidecar (a small range then takes the fast lane)."""
    url, tokens, root = center
    if known:  # n1 lands a range of another source first: its token is cached
        assert post(url, "n1", tokens["n1"], 0, LINE, identity="warm-up").status_code == 200
    token = tokens.get(who, who)
    response = post(url, node, token, 0, body, **headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    landed = [p.read_bytes() for p in root.rglob("*.log")] if root.exists() else []
    assert [data for data in landed if data] == ([LINE] if known else [])


def test_metrics_say_per_node_what_an_operator_alerts_on(center, fresh_db_url: str):
    """Per registered node: lag, seconds since its last call, bytes waiting, today's lines
    and bytes, lines and bytes loaded (counters), its shipper's version; the loads' lines,
    rejects and seconds (counters); the exposition passes `promtool check metrics`."""
    url, tokens, root = center
    gz = {"Content-Encoding": "gzip", "User-Agent": "xray-pipeline-ship/9.9"}
    assert post(url, "n1", tokens["n1"], 0, gzip.compress(LINE * 3), **gz).status_code == 200
    text = httpx.get(f"{url}/metrics", timeout=10).text
    series = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("xray_node_")
    }
    assert 0 <= series['xray_node_contact_age_seconds{node="n1"}'] < 60
    assert math.isnan(series['xray_node_contact_age_seconds{node="n2"}'])  # never called
    assert series['xray_node_waiting_bytes{node="n1"}'] == 3 * len(LINE)  # landed, not loaded
    assert math.isnan(series['xray_node_lag_seconds{node="n1"}'])  # nothing loaded yet
    assert series['xray_node_shipper_info{node="n1",version="xray-pipeline-ship/9.9"}'] == 1
    assert series['xray_node_loaded_today{node="n2",unit="lines"}'] == 0
    assert series['xray_node_loaded_lines_total{node="n1"}'] == 0

    # the landed lines loaded (one of them not a log line): the counters follow the ledger
    [landed] = landed_sources(root, "n1").values()
    with connect(fresh_db_url) as conn:
        source = register_source(conn, "landed:n1", str(landed.path), "n1")
        data = landed.path.read_bytes() + b"not a log line\n"
        parsed = parse_chunk(data, source=str(landed.path))
        load_chunk(conn, parsed, source, run_id="r", timezone="UTC")
    text = httpx.get(f"{url}/metrics", timeout=10).text
    series = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("xray_node_loaded", "xray_loads_"))
    }
    assert series['xray_node_loaded_lines_total{node="n1"}'] == 4
    assert series['xray_node_loaded_bytes_total{node="n1"}'] == len(data)
    assert series['xray_node_loaded_lines_total{node="n2"}'] == 0
    assert series["xray_loads_lines_total"] == 4 and series["xray_loads_rejects_total"] == 1
    assert series["xray_loads_seconds_total"] > 0
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool (Debian's prometheus package) is missing: apt-get install prometheus"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
