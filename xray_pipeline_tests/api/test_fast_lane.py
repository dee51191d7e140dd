"""The landing's fast lane: which requests it answers itself and which it leaves to the
route, driven as ASGI (the app behind it records what reached it)."""

import asyncio
import gzip
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from xray_pipeline.api.routers.ship import INLINE_BYTES, RANGES_ROUTE, TokenCache, fast_lane
from xray_pipeline.core.fleet.nodes import token_hash

LINE = b"2025/01/01 00:00:00 from 192.0.2.1:1 accepted tcp:a.example:443 email: u\n"


def lane_for(tmp_path: Path):
    passed, counted = [], []
    cache = TokenCache()
    cache.known[token_hash("t1")] = ("n1", time.monotonic())
    state = SimpleNamespace(landing_dir=tmp_path, node_tokens=cache, max_range_bytes=1 << 20)

    async def behind(scope, receive, send):
        passed.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    lane = fast_lane(behind, state, lambda *args: counted.append(args))
    return lane, passed, counted


def call(lane, path: str, query: str, body: bytes, headers: dict[str, str], method="POST"):
    scope = {
        "type": "http", "method": method, "path": path, "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    sent = []
    chunks = [body[:10], body[10:]]

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    status = sent[0]["status"]
    payload = sent[1].get("body", b"")
    return status, json.loads(payload) if status != 299 else None


def headers(token="t1", length=None, **more):
    return {"Authorization": f"Bearer {token}", "Content-Length": str(length), **more}


def test_a_known_nodes_small_range_lands_in_the_lane(tmp_path: Path):
    lane, passed, counted = lane_for(tmp_path)
    body = gzip.compress(LINE * 3)
    status, answer = call(
        lane, "/api/ship/n1/ranges", "identity=a%3A1&start=0&path=%2Fx.log", body,
        headers(length=len(body), **{"Content-Encoding": "gzip", "User-Agent": "ship/1"}),
    )  # fmt: skip
    assert (status, answer) == (200, {"identity": "a:1", "end": 3 * len(LINE)})
    assert passed == []
    assert counted[0][:3] == ("POST", RANGES_ROUTE, "200")
    [segment] = (tmp_path / "n1").glob("*.log")
    assert segment.read_bytes() == LINE * 3
    assert json.loads((tmp_path / "n1" / "contact.json").read_text())["version"] == "ship/1"
    # a gap is refused in the lane as the route refuses it: with the offset to send from
    status, answer = call(
        lane, "/api/ship/n1/ranges", "identity=a%3A1&start=999", LINE, headers(length=len(LINE))
    )
    assert status == 409 and answer["expected"] == 3 * len(LINE)


@pytest.mark.parametrize(
    ("path", "query", "hdrs", "method"),
    [
        ("/api/ship/n1/ranges", "identity=a&start=0", headers(token="t2", length=10), "POST"),
        ("/api/ship/n2/ranges", "identity=a&start=0", headers(length=10), "POST"),
        ("/api/ship/n1/ranges", "identity=a&start=0", headers(length=INLINE_BYTES + 1), "POST"),
        ("/api/ship/n1/ranges", "identity=a&start=0", {"Authorization": "Bearer t1"}, "POST"),
        ("/api/ship/n1/ranges", "identity=a&start=-1", headers(length=10), "POST"),
        ("/api/ship/n1/ranges", "identity=a&start=%C2%B2", headers(length=10), "POST"),
        ("/api/ship/n1/ranges", "start=0", headers(length=10), "POST"),
        ("/api/ship/n1/ranges", "identity=a&identity=b&start=0", headers(length=10), "POST"),
        ("/api/ship/../ranges", "identity=a&start=0", headers(length=10), "POST"),
        ("/api/ship/n1/sources", "", headers(length=0), "GET"),
        ("/api/logs", "", headers(length=0), "POST"),
    ],
    ids=[
        "unknown token", "another node", "a backlog's range", "no length", "negative start",
        "not an ASCII number", "no identity", "two identities", "dot-dot", "a GET", "another path",
    ],
)  # fmt: skip
def test_everything_else_goes_on_to_the_route(tmp_path: Path, path, query, hdrs, method):
    lane, passed, counted = lane_for(tmp_path)
    status, _ = call(lane, path, query, LINE[:10], hdrs, method=method)
    assert status == 299 and passed == [path] and counted == []
    assert not list(tmp_path.rglob("*.log"))
