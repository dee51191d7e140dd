"""A fleet with real processes: shippers (`xray-pipeline ship`, one per node, each with a
writer of its own) against a center (the sidecar over HTTP, a real PostgreSQL). One node
rotates its log by rename, one shipper is killed with SIGKILL and restarted, the center (the
sidecar, and the database when it is the embedded one) stops for a while as nodes keep writing,
one node truncates its log and another rotates it by copytruncate: afterwards every line of
every node is in `logs` exactly once, under its node."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, TEST_HOME, live_api

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.embedded import EmbeddedServer
from xray_pipeline.core.fleet.landing import landed_files, landed_sources
from xray_pipeline.core.fleet.nodes import add_node
from xray_pipeline.core.ingest.oneshot import ingest_files

pytestmark = [pytest.mark.slow]
NODES = 3


def line(node: int, i: int) -> str:
    return (
        f"2025/01/01 00:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d} from 192.0.2.{node}:1 accepted "
        f"tcp:n{node}.example:443 [in >> out] email: n{node}-{i}\n"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_shipper(node: int, token: str, log: Path, home: Path, url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(XRAY_HOME=str(home), XRAY_SHIP_TOKEN=token, XRAY_SHIP_INTERVAL="0.3")
    cmd = [sys.executable, "-m", "xray_pipeline.cli", "ship", "--central", url,
           "--node", f"n{node}", "--logfile", str(log)]  # fmt: skip
    out = (home / "ship.out").open("ab")
    return subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(300)
def test_every_line_of_every_node_once_through_kills_outages_and_truncation(
    fresh_db_url: str, tmp_path: Path
):
    with connect(fresh_db_url) as conn:
        tokens = {n: add_node(conn, f"n{n}") for n in range(NODES)}
    root = tmp_path / "landed"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = {n: tmp_path / f"node{n}" / "access.log" for n in range(NODES)}
    written: dict[int, list[str]] = {n: [] for n in range(NODES)}
    stop = threading.Event()
    rotate = {n: threading.Event() for n in range(NODES)}

    def write(n: int) -> None:
        i = 0
        while not stop.is_set():
            if rotate[n].is_set():
                if n == 0:
                    time.sleep(0.5)  # the shipper reads what was written before it goes
                    logs[n].write_text("")  # 3x-ui's IP-limit job truncates the log in place
                elif n == 1:
                    logs[n].rename(logs[n].with_name("access.log.1"))  # logrotate's create
                else:
                    shutil.copyfile(logs[n], logs[n].with_name("access.log.1"))  # copytruncate
                    with logs[n].open("r+") as fh:
                        fh.truncate(0)
                rotate[n].clear()
            with logs[n].open("a") as fh:
                for _ in range(5):
                    fh.write(line(n, i))
                    written[n].append(line(n, i))
                    i += 1
            time.sleep(0.1)

    for log in logs.values():
        log.parent.mkdir()
        log.write_text("")
    shippers = {}
    writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(NODES)]
    try:
        with live_api(fresh_db_url, port=port, landing_dir=root):
            for n in range(NODES):
                shippers[n] = start_shipper(n, tokens[n], logs[n], tmp_path / f"node{n}", url)
            for writer in writers:
                writer.start()
            time.sleep(4)
            shippers[1].send_signal(signal.SIGKILL)  # killed outright, then started again
            shippers[1].wait()
            time.sleep(1)
            shippers[1] = start_shipper(1, tokens[1], logs[1], tmp_path / "node1", url)
            time.sleep(1)
            rotate[1].set()
            time.sleep(2)
        # the center is down: the nodes keep writing; node 0 truncates, node 2 copytruncates
        database = None if os.environ.get("XRAY_TEST_DATABASE_URL") else EmbeddedServer(TEST_HOME)
        if database is not None:
            database.stop()
        time.sleep(2)
        rotate[0].set()
        rotate[2].set()
        time.sleep(3)
        if database is not None:
            database.start()
        with live_api(fresh_db_url, port=port, landing_dir=root):
            time.sleep(3)
            stop.set()
            for writer in writers:
                writer.join()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ends = {n: sum(s.end - s.base for s in landed_sources(root, f"n{n}").values())
                        for n in range(NODES)}  # fmt: skip
                if all(ends[n] == sum(map(len, written[n])) for n in range(NODES)):
                    break
                time.sleep(0.5)
    finally:
        for proc in shippers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in shippers.values():
            proc.wait(timeout=30)
    log0 = (tmp_path / "node0" / "ship.out").read_text()
    assert "center is unavailable" in log0, log0
    with connect(fresh_db_url) as conn:
        for path, node in landed_files(root):
            ingest_files(conn, [path], timezone="UTC", batch_size=1 << 20, node=node)
        rows = conn.execute(
            "SELECT s.node, u.email FROM logs l JOIN sources s ON s.id = l.source_id "
            "JOIN users u ON u.id = l.user_id"
        ).fetchall()
    for n in range(NODES):
        emails = sorted(email for node, email in rows if node == f"n{n}")
        expected = sorted(text.rsplit("email: ", 1)[1].strip() for text in written[n])
        assert emails == expected, f"n{n}: {len(emails)} rows, {len(expected)} lines written"
