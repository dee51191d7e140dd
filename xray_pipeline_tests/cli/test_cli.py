"""The CLI as a user runs it: a real process, a real database."""

import datetime as dt
import os
import shutil
import signal
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import run_cli, write_mmdb

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.embedded import EmbeddedServer
from xray_pipeline.core.db.session import with_database
from xray_pipeline.core.ingest.oneshot import ingest_files

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("db", "config", "demo"):
        assert command in result.stdout
    for sub in ("start", "stop", "status", "url", "psql", "upgrade"):
        assert sub in run_cli("db", "--help").stdout


def test_db_url_and_upgrade_on_configured_database(empty_db_url: str):
    env = {"XRAY_DATABASE_URL": empty_db_url}
    assert run_cli("db", "url", env=env).stdout.strip() == empty_db_url
    first = run_cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 001_reference_tables.sql" in first.stdout
    second = run_cli("db", "upgrade", env=env)
    assert second.returncode == 0
    assert "schema is up to date" in second.stdout
    status = run_cli("db", "status", env=env)
    assert status.returncode == 0 and "answers" in status.stdout
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('logs')").fetchone()[0] == "logs"


def test_unreachable_server_is_one_clear_line():
    result = run_cli("db", "upgrade", env={"XRAY_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in lines[0]
    assert "XRAY_DATABASE_URL" in lines[0]


def test_missing_database_names_it(pg_server_url: str):
    url = with_database(pg_server_url, "no_such_db_here")
    result = run_cli("db", "upgrade", env={"XRAY_DATABASE_URL": url})
    assert result.returncode == 1
    assert "database 'no_such_db_here' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_role_without_the_rights_is_one_clear_line(fresh_db_url: str, tmp_path: Path):
    """The sidecar's read-only role given to `ingest`: the refusal, and the fix, in one line."""
    log = tmp_path / "access.log"
    log.write_text("2025/01/01 00:00:00 from 192.0.2.1:1 accepted tcp:a.example:443\n")
    read_only = fresh_db_url.replace("://postgres@", "://xray_api@")
    result = run_cli(
        "ingest", "--logfile", str(log),
        env={"XRAY_DATABASE_URL": read_only, "XRAY_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "error: PostgreSQL refused: permission denied" in result.stderr
    assert "connect as the database's owner" in result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_shows_traceback():
    result = run_cli(
        "--verbose", "db", "upgrade", env={"XRAY_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_bad_setting_exit_code_and_message(tmp_path: Path):
    config = tmp_path / "config.ini"
    config.write_text("[parser]\ntimezone = Atlantis\n")
    result = run_cli("--config", str(config), "config", "show")
    assert result.returncode == 2
    assert "[parser] timezone = 'Atlantis'" in result.stderr
    assert "IANA" in result.stderr


def test_config_show_masks_and_explains(tmp_path: Path):
    config = tmp_path / "config.ini"
    config.write_text("[postgresql]\nhost = db.example.org\npassword = hunter2\n")
    result = run_cli(
        "--config",
        str(config),
        "--timezone",
        "Asia/Tehran",
        "config",
        "show",
        env={"XRAY_STATS_FORMAT": "csv"},
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "***" in result.stdout
    assert "Asia/Tehran" in result.stdout and "command line" in result.stdout
    assert "environment XRAY_STATS_FORMAT" in result.stdout


@pytest.mark.slow
def test_embedded_server_lifecycle():
    """start twice is harmless, a killed server restarts with its data, stop stops."""
    home = PROJECT_ROOT / ".xray" / f"test-lifecycle-{uuid.uuid4().hex[:8]}"
    env = {"XRAY_HOME": str(home)}
    try:
        first = run_cli("db", "start", env=env)
        assert first.returncode == 0, first.stderr
        second = run_cli("db", "start", env=env)
        assert second.returncode == 0, second.stderr
        url = run_cli("db", "url", env=env).stdout.strip()
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE keep_me (x int)")
            conn.execute("INSERT INTO keep_me VALUES (42)")
        server = EmbeddedServer(home)
        pid = server.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # a crash: postmaster.pid is left behind, stale
        import time

        deadline = time.monotonic() + 20
        while server.status().running and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (home / "pgdata" / "postmaster.pid").exists()
        assert run_cli("db", "status", env=env).returncode == 1
        restarted = run_cli("db", "start", env=env)
        assert restarted.returncode == 0, restarted.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT x FROM keep_me").fetchone() == (42,)
        stopped = run_cli("db", "stop", env=env)
        assert "stopped" in stopped.stdout
        assert run_cli("db", "status", env=env).returncode == 1
        assert "not running" in run_cli("db", "stop", env=env).stdout
    finally:
        EmbeddedServer(home).stop("immediate") if (home / "pgdata").exists() else None
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("command", ["db start", "db stop"])
def test_embedded_commands_refuse_external_database(command: str):
    result = run_cli(*command.split(), env={"XRAY_DATABASE_URL": "postgresql://u@h/d"})
    assert result.returncode == 2
    assert "not embedded" in result.stderr


def test_demo_appends_and_loads_exactly_once(fresh_db_url: str, tmp_path: Path):
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path)}
    first = run_cli("demo", "--once", "--lines", "3000", env=env)
    assert first.returncode == 0, first.stderr
    assert "loaded 3,000 new lines" in first.stdout
    second = run_cli("demo", "--once", "--lines", "500", env=env)
    assert "loaded 500 new lines" in second.stdout
    with connect(fresh_db_url) as conn:
        total = conn.execute(
            "SELECT (SELECT count(*) FROM logs) + (SELECT count(*) FROM dns_queries) "
            "+ (SELECT count(*) FROM rejects)"
        ).fetchone()[0]
    assert total == 3_500
    assert (tmp_path / "stats.jsonl").read_text().count("\n") == 2
    assert "synthetic country and ASN databases" in first.stdout
    with connect(fresh_db_url) as conn:
        unplaced = conn.execute(
            "SELECT count(*) FROM logs l LEFT JOIN ip_places p ON p.address = host(l.src_ip) "
            "WHERE l.src_ip IS NOT NULL AND p.country IS NULL"
        ).fetchone()[0]
    assert unplaced == 0  # every generated address is placed by the synthetic databases


def test_up_and_serve_name_a_port_in_use_before_starting_anything(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "up", "--logfile", str(tmp_path / "access.log"), "--port", str(port),
            env={"XRAY_HOME": str(tmp_path / "home")}, timeout=60,
        )  # fmt: skip
        served = run_cli(
            "serve", "--port", str(port), env={"XRAY_HOME": str(tmp_path / "home")}, timeout=60
        )
    for run in (result, served):
        assert run.returncode == 1, run.stderr
        assert f"port {port} on 127.0.0.1 is in use" in run.stderr
        assert "choose another with --port" in run.stderr
    assert not (tmp_path / "home" / "pgdata").exists()  # no database started for nothing


def test_nodes_add_list_remove(fresh_db_url: str):
    env = {"XRAY_DATABASE_URL": fresh_db_url}
    added = run_cli("nodes", "add", "edge-1", env=env)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("xrn_") and "shown only this once" in added.stderr
    again = run_cli("nodes", "add", "edge-1", env=env)
    assert again.returncode == 2 and "already registered" in again.stderr
    bad = run_cli("nodes", "add", "../etc", env=env)
    assert bad.returncode == 2 and "letters, digits" in bad.stderr
    listed = run_cli("nodes", "list", env=env)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("edge-1"))
    # never called, no shipper, nothing loaded: no lag, 0 lines and bytes today, 0 waiting
    assert row.split() == ["edge-1", "never", "-", "-", "0", "0", "0"]
    assert token not in listed.stdout
    assert run_cli("nodes", "remove", "edge-1", env=env).returncode == 0
    gone = run_cli("nodes", "remove", "edge-1", env=env)
    assert gone.returncode == 1 and "no node named" in gone.stderr


def test_geoip_status_names_the_databases_and_their_share_of_todays_addresses(
    fresh_db_url: str, tmp_path: Path, same_day
):
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path / "home")}
    assert "no database configured" in run_cli("geoip", "status", env=env).stdout
    country = write_mmdb(
        tmp_path / "country.mmdb", {"192.0.2.0/24": {"country": {"iso_code": "DE"}}}, "T-Country"
    )
    now = dt.datetime.now(dt.UTC)
    log = tmp_path / "access.log"
    log.write_text(
        "".join(
            f"{now:%Y/%m/%d %H:%M:%S}.{i:06d} from {ip}:1 accepted tcp:a.example:443 email: u\n"
            for i, ip in enumerate(["192.0.2.7", "192.0.2.8", "198.51.100.1", "203.0.113.5"])
        )
    )
    with connect(fresh_db_url) as conn:
        ingest_files(conn, [log], timezone="UTC", batch_size=64 * 1024)
    shown = run_cli("geoip", "status", env={**env, "XRAY_GEOIP_COUNTRY_DB": str(country)})
    assert shown.returncode == 0, shown.stderr
    assert "[geoip] country_db" in shown.stdout and "T-Country" in shown.stdout
    assert "50% of today's 4 source addresses" in shown.stdout
    broken = run_cli("geoip", "status", env={**env, "XRAY_GEOIP_ASN_DB": str(log)})
    assert broken.returncode == 2
    assert "[geoip] asn_db" in broken.stderr and "not a MaxMind-format database" in broken.stderr
