"""The shipper against a real center (the sidecar over HTTP, a real PostgreSQL): every line
of every file lands once and in order, through rotations and truncations during an outage."""

import itertools
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import live_api

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.fleet.backlog import Backlog
from xray_pipeline.core.fleet.landing import landed_sources
from xray_pipeline.core.fleet.nodes import add_node
from xray_pipeline.core.fleet.shipper import Center, CenterRefused, Shipper, run_forever


def lines(tag: str, n: int, start: int = 0) -> bytes:
    return b"".join(
        f"2025/01/01 00:00:00.{i:06d} from 192.0.2.1:1 accepted tcp:{tag}.example:443 "
        f"email: u{i}\n".encode()
        for i in range(start, start + n)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def node(fresh_db_url: str, tmp_path: Path):
    with connect(fresh_db_url) as conn:
        token = add_node(conn, "n1")
        other = add_node(conn, "n2")
    return {"url": fresh_db_url, "token": token, "other": other, "root": tmp_path / "landed"}


def landed(root: Path) -> list[bytes]:
    """The landed bytes of each of the node's sources."""
    return sorted(s.path.read_bytes() for s in landed_sources(root, "n1").values())


def test_lines_land_once_through_an_outage_with_rotation_and_truncation(node, tmp_path: Path):
    log = tmp_path / "node" / "access.log"
    log.parent.mkdir()
    log.write_bytes(lines("a", 50))
    port = free_port()
    shipper = Shipper(
        [log],
        Center(f"http://127.0.0.1:{port}", "n1", node["token"], timeout=5),
        Backlog(tmp_path / "spool", 10 * 1024 * 1024),
        max_range_bytes=1024,
        interval=0.01,
        max_backoff=0.02,
    )
    with live_api(node["url"], port=port, landing_dir=node["root"]):
        stats = shipper.step()
        assert stats.sent_bytes == log.stat().st_size and stats.sent_ranges > 1
    # the center is down: the node keeps writing, rotates by rename, and truncates
    with log.open("ab") as fh:
        fh.write(lines("a", 10, 50))
    assert shipper.step().spooled_bytes == len(lines("a", 10, 50))
    log.rename(log.with_name("access.log.1"))
    with log.with_name("access.log.1").open("ab") as fh:
        fh.write(lines("a", 5, 60))  # Xray still writes to the renamed file a while
    log.write_bytes(lines("b", 20))
    stats = shipper.step()
    assert stats.spooled_bytes == len(lines("a", 5, 60)) + len(lines("b", 20))
    log.write_bytes(lines("c", 3))  # truncated in place (3x-ui's IP-limit job), rewritten
    shipper.step()
    assert shipper.spool.size() > 0
    with live_api(node["url"], port=port, landing_dir=node["root"]):
        time.sleep(0.05)  # past the backoff
        stats = shipper.step()
        assert stats.online and shipper.spool.size() == 0
        # a shipper started afresh (a restart, a reinstall) resends nothing
        again = Shipper([log], shipper.center, Backlog(tmp_path / "spool2", 1 << 20))
        assert again.step().sent_bytes == 0
    assert landed(node["root"]) == sorted([lines("a", 65), lines("b", 20), lines("c", 3)])


def test_a_full_spool_pauses_reading_and_drops_nothing(node, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_bytes(lines("a", 200))
    port = free_port()
    center = Center(f"http://127.0.0.1:{port}", "n1", node["token"], timeout=5)
    with live_api(node["url"], port=port, landing_dir=node["root"]):
        shipper = Shipper(
            [log],
            center,
            Backlog(tmp_path / "spool", 4096),
            max_range_bytes=1024,
            interval=0.01,
            max_backoff=0.02,
        )
        shipper.step()
    with log.open("ab") as fh:
        fh.write(lines("a", 300, 200))
    shipper.step()
    assert shipper.paused and shipper.spool.size() <= 4096
    with live_api(node["url"], port=port, landing_dir=node["root"]):
        time.sleep(0.05)
        while shipper.step().sent_bytes:
            pass
    assert landed(node["root"]) == [lines("a", 500)]


def test_a_shipper_started_while_the_center_is_away_reads_on_from_its_state(node, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_bytes(lines("a", 10))
    port = free_port()
    state = tmp_path / "state.json"

    def shipper() -> Shipper:
        center = Center(f"http://127.0.0.1:{port}", "n1", node["token"], timeout=5)
        spool = Backlog(tmp_path / "spool", 1 << 20)
        return Shipper([log], center, spool, state_file=state, interval=0.01, max_backoff=0.02)

    with live_api(node["url"], port=port, landing_dir=node["root"]):
        assert shipper().step().sent_bytes == len(lines("a", 10))
    # restarted while the center is away: it spools what is new, not what was sent
    with log.open("ab") as fh:
        fh.write(lines("a", 5, 10))
    offline = shipper()
    stats = offline.step()
    assert not stats.online and stats.spooled_bytes == len(lines("a", 5, 10))
    log.write_bytes(lines("b", 2))  # truncated: what was spooled is safe
    offline.step()
    with live_api(node["url"], port=port, landing_dir=node["root"]):
        time.sleep(0.05)
        assert offline.step().online
    assert landed(node["root"]) == sorted([lines("a", 15), lines("b", 2)])


def test_another_nodes_token_is_refused(node, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_bytes(lines("a", 3))
    port = free_port()
    with live_api(node["url"], port=port, landing_dir=node["root"]):
        center = Center(f"http://127.0.0.1:{port}", "n1", node["other"], timeout=5)
        with pytest.raises(CenterRefused) as refused:
            Shipper([log], center, Backlog(tmp_path / "spool", 1 << 20)).step()
    assert refused.value.status == 403
    assert not node["root"].exists() or not list(node["root"].rglob("*.log"))


class Misbehaving(BaseHTTPRequestHandler):
    """A center that answers every request with 500, or only after the client gave up."""

    def answer(self) -> None:
        if self.server.mode == "hang":
            time.sleep(1.5)  # well past the shipper's timeout
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the client hung up
            pass

    do_GET = do_POST = answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_center_that_fails_or_hangs_gets_backoff_and_a_bounded_spool(
    node, tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.mode = mode
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "access.log"
    log.write_bytes(lines("a", 100))
    limit = 3000
    shipper = Shipper(
        [log],
        Center(f"http://127.0.0.1:{server.server_port}", "n1", node["token"], timeout=0.3),
        Backlog(tmp_path / "spool", limit),
        max_range_bytes=512,
        interval=0.05,
        max_backoff=0.4,
    )
    stop = time.monotonic() + 3
    try:
        with caplog.at_level(logging.INFO, logger="xray_pipeline.ship"):
            run_forever(shipper, interval=0.05, should_stop=lambda: time.monotonic() > stop)
    finally:
        server.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    down = [m for m in messages if "the center is unavailable" in m]
    assert len(down) == 1  # said once per outage, with the reason
    assert ("answered 500" if mode == "500" else "Timeout") in down[0]
    assert any("the spool is full" in m for m in messages)
    assert shipper.paused and 0 < shipper.spool.size() <= limit
    spooled = shipper.spool.entries()
    assert spooled[0].start == 0
    assert all(a.end == b.start for a, b in itertools.pairwise(spooled))
    # the center is back: what was spooled, then the rest of the file, lands; nothing dropped
    shipper.center = Center(f"http://127.0.0.1:{free_port()}", "n1", node["token"])
    with live_api(node["url"], port=shipper.center.port, landing_dir=node["root"]):
        deadline = time.monotonic() + 20
        while landed(node["root"]) != [log.read_bytes()]:
            assert time.monotonic() < deadline, "the spool did not drain"
            time.sleep(0.1)
            shipper.step()
    assert shipper.spool.size() == 0 and not shipper.paused


def test_the_shipper_loads_neither_dagster_nor_polars_nor_a_database_driver():
    """`ship` runs on every node: it imports what it needs and no more (its memory is the
    fleet bench's figure)."""
    import subprocess
    import sys

    probe = (
        "import sys; from xray_pipeline.cli import main; import xray_pipeline.cli.ship; "
        "from xray_pipeline.core.fleet.shipper import Shipper; "
        "from xray_pipeline.core.fleet.nodes import check_name; "
        "from xray_pipeline.core.runtime.signals import stop_on_signals; "
        "print(sorted(m for m in ('dagster', 'polars', 'numpy', 'psycopg', 'fastapi') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("url", ["ftp://center.example", "center.example:8000", "http://"])
def test_a_center_address_that_is_not_http_names_the_setting(url: str):
    with pytest.raises(ValueError, match=r"\[ship\] central .* give http\(s\)://HOST\[:PORT\]"):
        Center(url, "n1", "token")
