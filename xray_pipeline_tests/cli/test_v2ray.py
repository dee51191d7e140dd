"""The logs a real V2Ray writes (Debian's `v2ray` 4.34, see core/synthetic/v2ray.py), loaded by
the real `ingest` and `up`: every connection made is a row with the fields its line shows,
once, across a copytruncate and a live tail. Where V2Ray is missing the tests say how to
install it; under CI they fail rather than skip."""

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import PROJECT_ROOT, run_cli

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.synthetic.v2ray import (
    INSTALL_HINT,
    KINDS,
    USERS,
    Expected,
    V2RayLab,
    v2ray_executable,
)
from xray_pipeline_tests.cli.test_services import free_port, lag_of, service_env, wait_for

pytestmark = [pytest.mark.slow]
__all__ = ["service_env"]  # the fixture, for the live test

# kinds made once per user; the others do not depend on the user
PER_USER = ("tcp", "udp", "blocked")


@pytest.fixture
def lab(tmp_path: Path):
    if v2ray_executable() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    with V2RayLab(tmp_path / "v2ray") as running:
        yield running


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_lines(paths: list[Path], count: int, timeout: float = 30) -> None:
    """V2Ray writes a line when it dispatches the connection (a refused one once it gave up)."""
    wait_for(lambda: sum(line_count(p) for p in paths) >= count, timeout, f"{count} lines")
    time.sleep(0.5)  # none more is due
    assert sum(line_count(p) for p in paths) == count


def key(e: Expected) -> tuple:
    return (e.status, e.email, e.dest_port, e.outbound_tag, e.network)


def stored(conn: psycopg.Connection) -> collections.Counter:
    rows = conn.execute(
        """
        SELECT l.status, u.email, e.port, t.name, p.name
        FROM logs l
        LEFT JOIN users u ON u.id = l.user_id
        LEFT JOIN endpoints e ON e.id = l.endpoint_id
        LEFT JOIN tags t ON t.id = l.outbound_tag_id
        LEFT JOIN protocols p ON p.id = l.dest_protocol_id
        """
    ).fetchall()
    rejected = conn.execute("SELECT count(*) FROM logs WHERE status = 'rejected'").fetchone()[0]
    counted = collections.Counter(tuple(r) for r in rows if r[0] == "accepted")
    counted[("rejected", None, None, None, None)] = rejected
    return counted


def assert_stored_once(db_url: str, lines: int) -> None:
    """`lines` rows, each line once (by its place in its file), no reject."""
    with connect(db_url) as conn:
        count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (source_id, byte_offset)) FROM logs"
        ).fetchone()
        assert count == distinct == lines
        assert conn.execute("SELECT count(*) FROM rejects").fetchone()[0] == 0


def start_service(args: list[str], env: dict, out: Path) -> subprocess.Popen:
    """`xray-pipeline ARGS` (up or demo) on a free UI port, without the API, in a process group
    of its own, its output in `out`."""
    cmd = [sys.executable, "-m", "xray_pipeline.cli", *args, "--port", str(free_port()),
           "--api-port", "0", "--ready-timeout", "240"]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, cwd=PROJECT_ROOT, stdout=out.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def ingest(log: Path, db_url: str, home: Path) -> subprocess.CompletedProcess:
    result = run_cli(
        "ingest", "--logfile", str(log),
        env={"XRAY_DATABASE_URL": db_url, "XRAY_HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def test_ingest_stores_every_connection_with_the_fields_its_line_shows(
    lab: V2RayLab, fresh_db_url: str, tmp_path: Path
):
    made: list[Expected] = []
    for kind in KINDS:
        for user in USERS if kind in PER_USER else USERS[:1]:
            made += [lab.connect(kind, user) for _ in range(3 if kind != "blocked" else 1)]
    wait_lines([lab.access_log], len(made))
    raw = lab.access_log.read_text(encoding="utf-8").splitlines()

    ingest(lab.access_log, fresh_db_url, tmp_path / "home")

    expected = collections.Counter(key(e) for e in made)
    with connect(fresh_db_url) as conn:
        assert stored(conn) == expected
        # what each line says of its user, read without the parser, is what was stored
        emails = collections.Counter(
            line.split(" email: ", 1)[1].rstrip() if " email: " in line else None for line in raw
        )
        by_user = collections.Counter(
            dict(
                conn.execute(
                    "SELECT u.email, count(*) FROM logs l LEFT JOIN users u ON u.id = l.user_id "
                    "GROUP BY u.email"
                ).fetchall()
            )
        )
        assert by_user == emails
        assert by_user["Carol Smith"] == 3 + 3 + 1  # tcp and udp 3 each, blocked 1
        assert conn.execute("SELECT count(*) FROM rejects").fetchone()[0] == 0
        # a multiplexed client: each sub-connection its own line, one source port
        mux = conn.execute(
            "SELECT count(*), count(DISTINCT l.src_port), min(p.name) FROM logs l "
            "JOIN users u ON u.id = l.user_id AND u.email = %s "
            "JOIN protocols p ON p.id = l.src_protocol_id AND p.name = 'tcp'",
            (USERS[1].email,),
        ).fetchone()
        assert mux == (3, 1, "tcp")
        urls = sorted(
            r[0][:7] for r in conn.execute("SELECT dest_url FROM logs WHERE dest_url IS NOT NULL")
        )
        assert urls == ["//127.0"] * 3 + ["http://"] * 3
    # a second ingest loads nothing
    ingest(lab.access_log, fresh_db_url, tmp_path / "home")
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == len(made)


def test_a_copytruncate_while_v2ray_writes_loses_and_doubles_nothing(
    lab: V2RayLab, fresh_db_url: str, tmp_path: Path
):
    """V2Ray writes with O_APPEND: after logrotate's copytruncate it goes on at offset 0."""
    stop = threading.Event()
    made: list[Expected] = []
    writer = threading.Thread(target=lambda: made.extend(lab.drive(40, stop)), daemon=True)
    writer.start()
    rotated = lab.access_log.with_name("access.log.1")
    home = tmp_path / "home"
    try:
        wait_for(lambda: line_count(lab.access_log) >= 60, 30, "lines before the rotation")
        ingest(lab.access_log, fresh_db_url, home)  # during writing
        shutil.copyfile(lab.access_log, rotated)  # logrotate's copytruncate
        with lab.access_log.open("r+b") as fh:
            fh.truncate(0)
        wait_for(lambda: line_count(lab.access_log) >= 60, 30, "lines after the rotation")
        ingest(lab.access_log, fresh_db_url, home)  # during writing, after the rotation
    finally:
        stop.set()
        writer.join(30)
    time.sleep(2)  # the last refused connections are written once V2Ray gives up on them
    ingest(lab.access_log, fresh_db_url, home)
    lines = line_count(rotated) + line_count(lab.access_log)
    # the lines written between the copy and the truncation are lost to both files (that
    # is copytruncate's, not ours): every line that is in a file is stored once
    assert lines <= len(made)
    assert_stored_once(fresh_db_url, lines)
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(DISTINCT source_id) FROM logs").fetchone()[0] == 2


@pytest.mark.timeout(400)
def test_up_with_v2ray_writing_for_a_minute_serves_every_line_once_and_fresh(
    lab: V2RayLab, fresh_db_url: str, service_env: dict, tmp_path: Path
):
    out = tmp_path / "up.out"
    proc = start_service(["up", "--logfile", str(lab.access_log)], service_env, out)
    stop = threading.Event()
    made: list[Expected] = []
    try:
        lab.connect("tcp")  # the day's first line, so that the tail run starts
        wait_for(lambda: "ready:" in out.read_text(), 300, "the first tick")
        writer = threading.Thread(target=lambda: made.extend(lab.drive(20, stop)), daemon=True)
        writer.start()
        delays = lag_of(lab.access_log, fresh_db_url, seconds=60)
        stop.set()
        writer.join(30)
        time.sleep(2)
        total = line_count(lab.access_log)

        def all_loaded() -> bool:
            with connect(fresh_db_url) as conn:
                return conn.execute("SELECT count(*) FROM logs").fetchone()[0] >= total

        wait_for(all_loaded, 30, "every line")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    assert total >= 1000 and len(made) >= 1000  # 20 connections a second for a minute
    delays.sort()
    p95 = delays[int(len(delays) * 0.95)]
    assert p95 < 8, f"append to queryable p95 {p95:.1f} s (target: under 8 s)"
    assert_stored_once(fresh_db_url, total)


@pytest.mark.timeout(400)
def test_demo_v2ray_loads_what_a_real_v2ray_writes(
    lab: V2RayLab, fresh_db_url: str, service_env: dict, tmp_path: Path
):
    """`demo --v2ray`: the demo log written by a local V2Ray serving real connections."""
    lab.stop()  # the fixture proved V2Ray is here; the demo runs its own
    out = tmp_path / "demo.out"
    proc = start_service(["demo", "--v2ray", "--nodes", "0"], service_env, out)
    log = Path(service_env["XRAY_HOME"]) / "demo" / "v2ray-access.log"
    try:
        wait_for(lambda: "ready:" in out.read_text(), 300, "the first tick")
        assert "a local V2Ray writes a line per connection" in out.read_text()

        def every_user_and_a_refusal() -> bool:
            with connect(fresh_db_url) as conn:
                emails = {r[0] for r in conn.execute("SELECT email FROM users").fetchall()}
                refused = conn.execute(
                    "SELECT count(*) FROM logs WHERE reason LIKE 'v2ray.com/core/%%'"
                ).fetchone()[0]
            return emails >= {u.email for u in USERS if u.email} and refused > 0

        wait_for(every_user_and_a_refusal, 120, "rows of every V2Ray user, and a refusal")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, out.read_text()
    assert "stopped; no process left running" in out.read_text()
    assert log.stat().st_size > 0
    lab_folder = str(log.parent / "v2ray")
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if lab_folder in " ".join(p.info["cmdline"] or [])
    ]
    assert not left, "the demo's V2Ray outlived it"
