"""End to end: the real Dagster daemon and webserver load appended lines through the sensor."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import with_database
from xray_pipeline.core.synthetic.planted import email_of

pytestmark = [pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def line(second: int) -> str:
    now = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())
    return f"{now}.{second:06d} from 198.51.100.7:1 accepted tcp:e2e.example:443 [in >> out] email: e2e\n"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(pids: list[int]) -> list[int]:
    return [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]


def lag_of(log: Path, db_url: str, *, seconds: float, node: str | None = None) -> list[float]:
    """For `seconds`, every half second: how long the file's size then took to be loaded
    (the ledger's end reaching it: of that file, or of what `node` shipped of it)."""
    pending: list[tuple[float, int]] = []
    delays: list[float] = []
    stop = time.monotonic() + seconds
    with connect(db_url, autocommit=True) as conn:
        while time.monotonic() < stop or (pending and time.monotonic() < stop + 30):
            if time.monotonic() < stop:
                pending.append((time.monotonic(), log.stat().st_size))
            end = conn.execute(
                "SELECT coalesce(max(l.end_offset), 0) FROM ingest_ledger l "
                "JOIN sources s ON s.id = l.source_id "
                "WHERE (%(node)s::text IS NULL AND s.path = %(path)s) OR s.node = %(node)s",
                {"node": node, "path": str(log)},
            ).fetchone()[0]
            now = time.monotonic()
            delays += [now - t for t, size in pending if size <= end]
            pending = [(t, size) for t, size in pending if size > end]
            time.sleep(0.5)
    return delays + [float("inf")] * len(pending)


@pytest.fixture
def service_env(fresh_db_url: str, tmp_path: Path):
    """The environment of an `up` or `demo` child on the test database, with a Dagster
    storage database of its own, dropped afterwards."""
    dagster_db = f"dagster_test_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(
        XRAY_DATABASE_URL=fresh_db_url,
        XRAY_HOME=str(tmp_path / "home"),
        XRAY_DAGSTER_DATABASE=dagster_db,
    )
    yield env
    with connect(with_database(fresh_db_url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dagster_db}" WITH (FORCE)')


@pytest.mark.timeout(400)
def test_up_loads_appended_lines_and_stops_cleanly(
    fresh_db_url: str, service_env: dict, tmp_path: Path
):
    log = tmp_path / "access.log"
    log.write_text(line(1))
    env = {**service_env, "XRAY_DAGSTER_SENSOR_INTERVAL": "5"}
    port = free_port()
    api_port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "xray_pipeline.cli",
        "up",
        "--logfile",
        str(log),
        "--port",
        str(port),
        "--ready-timeout",
        "240",
        "--api-port",
        str(api_port),
    ]
    out = (tmp_path / "up.out").open("w+")
    # started as `up ... &` from a script starts it: with SIGINT ignored, which `kill -INT`
    # below must overcome all the same
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        wait_for(lambda: "ready:" in (tmp_path / "up.out").read_text(), 300, "the first tick")
        # a second instance on the same home refuses to start and says why
        second = subprocess.run(
            cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert second.returncode == 1
        assert "already running" in second.stderr

        with log.open("a") as fh:
            fh.write("".join(line(i) for i in range(2, 12)))

        def loaded() -> int:
            with connect(fresh_db_url) as conn:
                return conn.execute("SELECT count(*) FROM logs").fetchone()[0] >= 11

        wait_for(loaded, 120, "the appended lines in logs")

        def api_answers() -> bool:
            import httpx

            try:
                page = httpx.get(f"http://127.0.0.1:{api_port}/api/logs", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            return page["total"] >= 11

        wait_for(api_answers, 60, "the API sidecar to serve the rows")
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert children, "dagster dev should be running"
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    text = (tmp_path / "up.out").read_text()
    assert "stopped; no process left running" in text, text
    time.sleep(1)
    assert not _alive(children)
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 11
        assert conn.execute("SELECT count(DISTINCT run_id) FROM ingest_ledger").fetchone()[0] >= 1


@pytest.mark.timeout(400)
def test_demo_keeps_the_lag_low_and_stops_on_sigterm(
    fresh_db_url: str, service_env: dict, tmp_path: Path
):
    env = service_env
    cmd = [
        sys.executable,
        "-m",
        "xray_pipeline.cli",
        "demo",
        "--rate",
        "50",
        "--port",
        str(free_port()),
        "--ready-timeout",
        "240",
        "--api-port",
        str(free_port()),
    ]
    out_path = tmp_path / "demo.out"
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=out_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "ready:" in out_path.read_text(), 300, "the first tick")

        storage = with_database(fresh_db_url, env["XRAY_DAGSTER_DATABASE"])

        def tailing() -> bool:
            with connect(storage) as conn:
                return (
                    conn.execute(
                        "SELECT count(*) FROM runs WHERE pipeline_name = 'tail_logs_job' "
                        "AND status = 'STARTED'"
                    ).fetchone()[0]
                    == 1
                )

        wait_for(tailing, 180, "the tail run of today to start")
        delays = lag_of(tmp_path / "home" / "demo" / "access.log", fresh_db_url, seconds=30)
        # the tail run looks every second: a line waits about that, never the tens of
        # seconds of a run per increment (docs/performance.md has the bench's figures)
        assert len(delays) > 20 and max(delays) < 10, delays
        # the demo's two nodes ship to the sidecar: their lines are loaded as quickly, each
        # under its node (a shipper looks every second, then the tail run)
        for node in ("demo-node-1", "demo-node-2"):
            node_log = tmp_path / "home" / "demo" / "nodes" / node / "access.log"
            delays = lag_of(node_log, fresh_db_url, seconds=5, node=node)
            assert len(delays) > 5 and max(delays) < 10, (node, delays)
        # the demo's synthetic databases place the sources of every node's rows as they load
        with connect(fresh_db_url) as conn:
            placed = conn.execute(
                "SELECT count(DISTINCT coalesce(s.node, '')), count(*) FILTER (WHERE p.country IS NULL) "
                "FROM logs l JOIN sources s ON s.id = l.source_id JOIN ip_places p "
                "ON p.address = host(l.src_ip) WHERE p.db_version LIKE 'xray-pipeline-synthetic%'"
            ).fetchone()
        assert placed == (3, 0)  # the local demo log (no node) and the two demo nodes

        # a minute in, the demo plants a sharer over the local log and both nodes: the rules
        # open its incident, and nobody else's (the demo's mix breaks no rule)
        def incidents() -> list[tuple]:
            with connect(fresh_db_url) as conn:
                return conn.execute("SELECT rule, subject, evidence FROM incidents").fetchall()

        def sharer_nodes() -> set[str]:  # the nodes of the planted sharer's evidence so far
            found = [e for r, subject, e in incidents() if subject == email_of(1)]
            return {n for e in found for u in e for n in u["nodes"]}

        # (the local log has no node name)
        wait_for(lambda: sharer_nodes() == {"demo-node-1", "demo-node-2"}, 150, "the sharer")
        assert {(r, s) for r, s, _ in incidents()} <= {("ip_limit", email_of(1)),
                                                       ("tagged", email_of(38))}  # fmt: skip
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert "stopped; no process left running" in out_path.read_text()
    time.sleep(1)
    assert not _alive(children)
    assert (tmp_path / "home" / "demo" / "access.log").stat().st_size > 0
    with connect(storage) as conn:
        left = conn.execute(
            "SELECT status FROM runs WHERE pipeline_name = 'tail_logs_job'"
        ).fetchall()
    # the stopped tail run says so: the next `up` need not wait for its heartbeat to go stale
    assert left and all(status in {"FAILURE", "CANCELED"} for (status,) in left), left


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", ["up", "demo"])
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM, signal.SIGTERM)],
    ids=["SIGINT to the group", "SIGTERM to the group, again while stopping"],
)
def test_a_signal_to_the_whole_group_stops_every_child(
    service_env: dict, tmp_path: Path, command: str, signals: tuple[int, ...]
):
    """As a supervisor script stops a group it started with setsid (`kill -INT -PGID`): every
    child stops, Dagster's code server and the sidecar included, and only then "stopped"."""
    log = tmp_path / "access.log"
    log.write_text(line(1))
    args = ["--logfile", str(log)] if command == "up" else ["--rate", "5"]
    cmd = [sys.executable, "-m", "xray_pipeline.cli", command, *args, "--port",
           str(free_port()), "--api-port", str(free_port()), "--ready-timeout", "200"]  # fmt: skip
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out:
        proc = subprocess.Popen(cmd, env=service_env, cwd=PROJECT_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: "ready:" in out_path.read_text(), 240, "the first tick")
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) >= 3  # dagster dev and its processes, the sidecar
        for sig in signals:
            os.killpg(proc.pid, sig)
            time.sleep(0.5)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out_path.read_text()
    assert "stopped; no process left running" in text, text
    time.sleep(1)
    assert not _alive(children), [psutil.Process(p).cmdline() for p in _alive(children)]
