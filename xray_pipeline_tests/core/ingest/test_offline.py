"""The offline buffer against a real PostgreSQL that is stopped, killed and restarted."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import run_cli

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.embedded import EmbeddedServer
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.ingest.offline import replay, segments, write_segment
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

PROJECT_ROOT = Path(__file__).resolve().parents[3]
LINES = 3_000


@pytest.fixture(scope="module")
def server():
    """A server of these tests' own, to stop and kill without disturbing the others."""
    home = PROJECT_ROOT / ".xray" / f"test-fault-{uuid.uuid4().hex[:8]}"
    srv = EmbeddedServer(home)
    srv.start()
    yield srv
    srv.stop("immediate")
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def db(server: EmbeddedServer):
    """A fresh database on the fault server, and the server running."""
    server.start()
    name = f"fault_{uuid.uuid4().hex[:8]}"
    with connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    with connect(url) as conn:
        apply_migrations(conn)
        conn.commit()
    yield url
    server.start()
    with connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env)


def exactly_once(url: str, lines: int) -> None:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT source_id, byte_offset FROM logs UNION ALL "
            "SELECT source_id, byte_offset FROM dns_queries UNION ALL "
            "SELECT source_id, byte_offset FROM rejects"
        ).fetchall()
        ledger = conn.execute("SELECT coalesce(sum(lines), 0) FROM ingest_ledger").fetchone()[0]
    assert len(rows) == lines, (len(rows), lines)
    assert len(set(rows)) == lines
    assert ledger == lines


@pytest.fixture
def env(db: str, tmp_path: Path) -> dict:
    return {
        "XRAY_DATABASE_URL": db,
        "XRAY_HOME": str(tmp_path / "home"),
        "XRAY_PARSER_BATCH_SIZE": "65536",
    }


@pytest.mark.slow  # stops and starts a server of its own
def test_down_before_the_run_spools_then_replays_once(server, db, env, tmp_path):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=LINES, other_share=0.3), log)
    server.stop()
    first = cli("ingest", "--logfile", str(log), env=env)
    assert first.returncode == 0, first.stderr
    assert "offline" in first.stderr and "spool" in first.stderr
    assert f"0 lines loaded (0 access, 0 dns, 0 rejects), {LINES:,} lines spooled" in first.stderr
    spool = tmp_path / "home" / "spool"
    waiting = segments(spool)
    assert waiting and sum(s.lines for s in waiting) == LINES
    stats = (tmp_path / "home" / "stats.jsonl").read_text()
    assert '"mode": "offline"' in stats
    # a second offline run does not spool the same bytes again
    again = cli("ingest", "--logfile", str(log), env=env)
    assert again.returncode == 0 and len(segments(spool)) == len(waiting)
    status = cli("spool", "status", env=env)
    assert str(len(waiting)) in status.stdout or "access.log" in status.stdout

    server.start()
    replayed = cli("replay", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"{LINES:,} lines loaded" in replayed.stderr
    exactly_once(db, LINES)
    assert "nothing waits" in cli("replay", env=env).stdout
    assert cli("ingest", "--logfile", str(log), env=env).returncode == 0
    exactly_once(db, LINES)


@pytest.mark.slow  # stops and starts a server of its own
def test_a_spool_that_cannot_be_written_pauses_and_loses_nothing(server, db, env, tmp_path):
    """The spool's disk refuses the write (here a file-size limit on the process, EFBIG, as
    real as a full disk's ENOSPC): a warning, exit 0, no half segment; the log still holds the
    lines, and the next run with the database back loads each of them once."""
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=LINES), log)

    def small_files() -> None:  # in the child: writes past 20 kB fail instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    server.stop()
    refused = run_cli("ingest", "--logfile", str(log), env=env, preexec_fn=small_files)
    assert refused.returncode == 0, refused.stderr
    assert "cannot write the offline spool" in refused.stderr
    assert "the log file still holds the lines" in refused.stderr
    assert "Traceback" not in refused.stderr
    spool = tmp_path / "home" / "spool"
    assert not list(spool.glob("*.tmp"))  # nothing half written is left
    assert segments(spool) == []

    server.start()
    loaded = cli("ingest", "--logfile", str(log), env=env)
    assert loaded.returncode == 0, loaded.stderr
    exactly_once(db, LINES)


@pytest.mark.slow  # stops and starts a server of its own
def test_down_in_the_middle_of_a_copy(server, db, tmp_path):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=LINES), log)
    spool = tmp_path / "spool"
    calls = []

    def crash_server():
        calls.append(1)
        if len(calls) == 2:
            server.stop("immediate")  # the postmaster dies inside the load's transaction

    def spooler(parsed, source):
        return write_segment(
            spool,
            parsed,
            identity=source.identity,
            source_path=source.path,
            node=None,
            timezone="UTC",
        )

    conn = connect(db)
    stats = ingest_files(
        conn,
        [log],
        timezone="UTC",
        batch_size=64 * 1024,
        before_commit=crash_server,
        spooler=spooler,
    )
    conn.close()
    assert stats.mode == "offline" and stats.spooled_chunks >= 1
    assert stats.lines + stats.spooled_lines == LINES
    server.start()
    with connect(db) as conn:
        list(replay(conn, spool))
    exactly_once(db, LINES)


@pytest.mark.slow  # stops and starts a server of its own
def test_down_during_a_replay_then_finished(server, db, tmp_path):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=LINES), log)
    spool = tmp_path / "spool"
    from xray_pipeline.core.ingest.files import identify, iter_chunks
    from xray_pipeline.core.parse import parse_chunk

    identity = identify(log).key
    with log.open("rb") as fh:
        for offset, chunk in iter_chunks(fh, 64 * 1024):
            write_segment(
                spool,
                parse_chunk(chunk, base_offset=offset),
                identity=identity,
                source_path=str(log),
                node=None,
                timezone="UTC",
            )
    total = len(segments(spool))
    conn = connect(db)
    with pytest.raises(Exception):  # noqa: B017 (the server is gone: any driver error)
        for n, _ in enumerate(replay(conn, spool)):
            if n == 0:
                server.stop("immediate")
    conn.close()
    assert 0 < len(segments(spool)) < total
    server.start()
    with connect(db) as conn:
        list(replay(conn, spool))
    exactly_once(db, LINES)


def test_damaged_segment_is_kept_aside_and_never_half_loaded(db, tmp_path):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=500), log)
    spool = tmp_path / "spool"
    from xray_pipeline.core.ingest.files import identify
    from xray_pipeline.core.parse import parse_chunk

    data = log.read_bytes()
    path = write_segment(
        spool,
        parse_chunk(data),
        identity=identify(log).key,
        source_path=str(log),
        node=None,
        timezone="UTC",
    )
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a torn write
    (spool / "stray.tmp").write_bytes(b"{half")  # a crash before the rename: ignored
    with connect(db) as conn:
        outcomes = list(replay(conn, spool))
    assert [damaged for _, _, damaged in outcomes] == [True]
    assert (spool / "corrupt" / path.name).exists()
    with connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 0
    # the lines are still in the log: an online ingest loads them
    with connect(db) as conn:
        ingest_files(conn, [log], timezone="UTC", batch_size=64 * 1024)
    exactly_once(db, 500)


@pytest.mark.slow  # stops and starts a server of its own
def test_two_replays_at_once_load_once(server, db, env, tmp_path):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=LINES), log)
    server.stop()
    assert cli("ingest", "--logfile", str(log), env=env).returncode == 0
    server.start()
    full = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    full.update(env)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xray_pipeline.cli", "replay"],
            env=full,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        proc.wait(timeout=180)
        assert proc.returncode == 0, proc.stderr.read()
    exactly_once(db, LINES)


@pytest.mark.slow  # stops and starts a server of its own
def test_offline_buffer_sensor_and_asset(server, db, tmp_path):
    import dagster as dg

    from xray_pipeline.core.ingest.files import identify
    from xray_pipeline.core.parse import parse_chunk
    from xray_pipeline.definitions import build_definitions
    from xray_pipeline.settings import load_settings

    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=800), log)
    spool = tmp_path / "home" / "spool"

    def defs_for(url: str) -> dg.Definitions:
        return build_definitions(
            load_settings(
                None,
                {
                    "postgresql.url": url,
                    "general.home": str(tmp_path / "home"),
                    "parser.logfile": [str(log)],
                    "dagster.start_date": "2025-11-01",
                },
                env={},
            )
        )

    defs = defs_for(db)
    sensor = defs.resolve_sensor_def("offline_buffer_sensor")
    with dg.instance_for_test() as instance:
        empty = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        assert "empty" in empty.skip_message
        write_segment(
            spool,
            parse_chunk(log.read_bytes()),
            identity=identify(log).key,
            source_path=str(log),
            node=None,
            timezone="UTC",
        )
        down_defs = defs_for("postgresql://postgres@127.0.0.1:1/x")
        down = down_defs.resolve_sensor_def("offline_buffer_sensor")(
            dg.build_sensor_context(instance=instance, resources=down_defs.resources)
        )
        assert "database unreachable" in down.skip_message
        request = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        assert request.run_key.startswith("replay-")
        result = defs.resolve_job_def("replay_offline_buffer_job").execute_in_process(
            instance=instance
        )
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["lines_loaded"].value == 800
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert segments(spool) == []
    exactly_once(db, 800)


@pytest.mark.slow  # stops and starts a server of its own
def test_api_gives_503_while_the_database_is_down_then_recovers(server, db):
    from fastapi.testclient import TestClient

    from xray_pipeline.api.main import create_app

    with TestClient(create_app(db)) as client:
        assert client.get("/api/logs").status_code == 200
        server.stop("immediate")
        down = client.get("/api/logs")
        assert down.status_code == 503 and "unavailable" in down.json()["detail"]
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health").status_code == 200
        server.start()
        deadline = time.monotonic() + 30
        while client.get("/api/logs").status_code != 200:
            assert time.monotonic() < deadline, "the pool did not recover"
            time.sleep(0.5)
        assert client.get("/health/ready").status_code == 200


def test_only_an_unavailable_server_counts_as_down():
    """What spools: a server that is away or cannot take work now. A value too long for an
    index is an OperationalError to psycopg too, but spooling it would fail again at replay."""
    import psycopg

    from xray_pipeline.core.ingest.offline import is_unavailable

    assert is_unavailable(psycopg.OperationalError("server closed the connection"))
    assert is_unavailable(psycopg.errors.AdminShutdown("terminating connection"))
    assert is_unavailable(psycopg.errors.CannotConnectNow("the database system is starting"))
    assert is_unavailable(psycopg.errors.TooManyConnections("too many clients"))
    assert is_unavailable(psycopg.errors.ReadOnlySqlTransaction("read-only"))
    assert not is_unavailable(psycopg.errors.ProgramLimitExceeded("index row size exceeds"))
    assert not is_unavailable(psycopg.errors.UniqueViolation("duplicate key"))
