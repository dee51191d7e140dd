"""`xray-pipeline export` and `forget` as an operator runs them, in a child process."""

import json
from pathlib import Path

from conftest import run_cli

from xray_pipeline.core.db.connect import connect

LOG = (
    "2024/05/01 10:00:00 from 192.0.2.66:1 accepted tcp:a.example:443 [in >> out] "
    "email: victim@example.org\n"
    "2024/05/01 10:00:01 from 192.0.2.7:1 accepted tcp:b.example:443 [in >> out] email: bob\n"
)


def test_export_then_forget(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(LOG)
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path / "home")}
    assert run_cli("ingest", "--logfile", str(log), env=env).returncode == 0
    exported = run_cli("export", "victim@example.org", env=env)
    assert exported.returncode == 0, exported.stderr
    report = json.loads(exported.stdout)
    assert report["found"] and report["sources"][0]["source"] == "192.0.2.66"
    refused = run_cli("forget", "victim@example.org", env=env)  # no terminal to confirm on
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = run_cli("forget", "victim@example.org", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "logs: 1 row(s) erased" in done.stdout and "is forgotten" in done.stdout
    with connect(fresh_db_url) as conn:
        assert [r[0] for r in conn.execute("SELECT email FROM users")] == ["bob"]
    after = json.loads(run_cli("export", "victim@example.org", env=env).stdout)
    assert after["found"] is False and after["forgotten"] is True


def test_per_user_limits(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(LOG)
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path / "home")}
    assert run_cli("ingest", "--logfile", str(log), env=env).returncode == 0
    unknown = run_cli("limits", "set", "nobody", "5", env=env)
    assert unknown.returncode == 2 and "no user 'nobody'" in unknown.stderr
    assert run_cli("limits", "set", "bob", "5", env=env).returncode == 0
    listed = run_cli(
        "limits",
        "list",
        env=env,
    )
    assert "default: 3 distinct sources (prefix) within 10 minutes" in listed.stdout
    assert "bob: 5" in listed.stdout
    assert run_cli("limits", "clear", "bob", env=env).returncode == 0
    assert "bob" not in run_cli("limits", "list", env=env).stdout
