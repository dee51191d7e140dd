"""`ingest` judges what it loads; `incidents list|show`; `alerts send|list|retry` against a real
local webhook that fails, then recovers."""

import json
from pathlib import Path

from xray_pipeline.core.alerts.receiver import Receiver
from xray_pipeline_tests.conftest import run_cli

SHARER = "".join(
    f"2024/05/01 10:00:0{i} from 192.0.{i}.7:1 accepted tcp:a.example:443 [in >> out] "
    "email: sharer\n"
    for i in range(5)
)
HONEST = (
    "2024/05/01 10:00:09 from 198.51.100.7:1 accepted tcp:a.example:443 [in >> out] email: bob\n"
)


def test_ingest_opens_an_incident_that_the_cli_shows_and_sends(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(SHARER + HONEST)
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path / "home")}
    loaded = run_cli("ingest", "--logfile", str(log), env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert "1 incident(s) opened" in loaded.stderr
    listed = run_cli("incidents", "list", "--open", env=env)
    assert "ip_limit sharer: 5 (limit 3)" in listed.stdout and "bob" not in listed.stdout
    assert "1 of 1 incident(s)" in listed.stdout
    shown = json.loads(run_cli("incidents", "show", "1", env=env).stdout)
    assert len(shown["evidence"]) == 5 and shown["changes"][0]["change"] == "opened"
    missing = run_cli("incidents", "show", "99", env=env)
    assert missing.returncode == 1 and "no incident 99" in missing.stderr
    bad = run_cli("incidents", "list", "--rule", "nope", env=env)
    assert bad.returncode == 2 and "--rule 'nope'" in bad.stderr
    assert "no target" in run_cli("alerts", "send", env=env).stderr

    with Receiver(failures=100) as receiver:
        hooked = env | {
            "XRAY_ALERTS_WEBHOOK_URL": receiver.url,
            "XRAY_ALERTS_ATTEMPTS": "1",
            "XRAY_ALERTS_MAX_AGE_MINUTES": str(10 * 365 * 24 * 60),  # the lines are of 2024
            "XRAY_ALERTS_WEBHOOK_SECRET": "a-secret-for-tests",
        }
        failed = run_cli("alerts", "send", env=hooked)
        assert "dead 1" in failed.stdout and "HTTP 500" in failed.stderr
        dead = run_cli("alerts", "list", "--status", "dead", env=hooked)
        assert "#1 opened -> webhook dead" in dead.stdout and "HTTP 500" in dead.stdout
        receiver.failures, receiver.secret = 0, b"a-secret-for-tests"
        retried = run_cli("alerts", "retry", env=hooked)
        assert "1 from the dead letter queued again" in retried.stdout
        assert "sent 1" in retried.stdout
        [got] = receiver.wait(1)
    assert got.signed is True and got.body["incident"]["subject"] == "sharer"
