"""Notifications of incident changes, received by a real local HTTP server: the webhook's
signed, versioned JSON, Telegram's sendMessage, once per change across passes and senders,
retries into the dead letter, the cooldown, stale changes, and the on_open_command hook."""

import datetime as dt
import json
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from xray_pipeline.core.alerts.outbox import deliver, retry_dead
from xray_pipeline.core.alerts.receiver import Receiver
from xray_pipeline.core.alerts.targets import AlertsError, AlertTargets
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.rules.detect import Breach
from xray_pipeline.core.rules.incidents import record

SECRET = b"a-webhook-secret-for-tests"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def breach(subject: str = "sharer", peak: int = 4, minutes: float = 0) -> Breach:
    at = NOW + dt.timedelta(minutes=minutes)
    evidence = [
        {"unit": f"192.0.2.{i}", "nodes": ["n1", "n2"], "country": "DE", "asn": 64500,
         "connections": 3}
        for i in range(peak)
    ]  # fmt: skip
    return Breach("ip_limit", subject, at, at, peak, 3, evidence)


def deliveries(conn: psycopg.Connection) -> list[tuple]:
    found = conn.execute(
        "SELECT c.change, d.target, d.status, d.attempts FROM alert_deliveries d "
        "JOIN incident_changes c ON c.id = d.change_id ORDER BY c.id, d.target"
    ).fetchall()
    conn.commit()
    return found


def test_the_webhook_gets_each_change_once_signed_and_versioned(conn):
    with Receiver(secret=SECRET) as receiver:
        targets = AlertTargets(webhook_url=receiver.url + "/hook", webhook_secret=SECRET)
        [incident] = record(conn, [breach()], now=NOW, quiet_minutes=30).opened
        assert deliver(conn, targets).sent == 1
        assert deliver(conn, targets).sent == 0  # a second pass (a restart) sends nothing
        [got] = receiver.wait(1)
    assert got.path == "/hook" and got.signed is True
    assert got.headers["X-Xray-Event"] == "incident.opened"
    body = got.body
    assert body["version"] == 1 and body["event"] == "opened"
    assert got.headers["X-Xray-Delivery"] == body["delivery"]
    assert body["incident"]["id"] == incident and body["incident"]["subject"] == "sharer"
    assert body["incident"]["peak"] == 4 and body["incident"]["limit"] == 3
    assert [u["unit"] for u in body["incident"]["evidence"]] == [f"192.0.2.{i}" for i in range(4)]
    assert deliveries(conn) == [("opened", "webhook", "sent", 1)]


def test_two_senders_at_once_send_each_change_once(fresh_db_url: str):
    with connect(fresh_db_url) as conn:
        breaches = [breach(f"user{i}") for i in range(12)]
        record(conn, breaches, now=NOW, quiet_minutes=30)
    with Receiver() as receiver:
        targets = AlertTargets(webhook_url=receiver.url)

        def send() -> None:
            with connect(fresh_db_url) as own:
                deliver(own, targets, batch=2)

        senders = [threading.Thread(target=send) for _ in range(3)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        got = receiver.wait(12, timeout=5)
    subjects = sorted(r.body["incident"]["subject"] for r in got)
    assert subjects == sorted(f"user{i}" for i in range(12))


def test_telegram_gets_a_plain_message_with_the_evidence(conn):
    with Receiver() as receiver:
        targets = AlertTargets(
            telegram_token="123:token", telegram_chat_id="-1001", telegram_api=receiver.url
        )
        record(conn, [breach()], now=NOW, quiet_minutes=30)
        assert deliver(conn, targets).sent == 1
        [got] = receiver.wait(1)
    assert got.path == "/bot123:token/sendMessage"
    assert got.body["chat_id"] == "-1001"
    text = got.body["text"]
    assert "ip_limit" in text and "sharer: 4 sources (limit 3)" in text
    assert "192.0.2.3 DE 64500 on n1,n2: 3 conn" in text


def test_a_target_that_keeps_failing_ends_in_the_dead_letter_and_the_other_is_sent(conn):
    with Receiver() as telegram, Receiver(failures=100) as webhook:
        targets = AlertTargets(
            webhook_url=webhook.url,
            telegram_token="t",
            telegram_chat_id="c",
            telegram_api=telegram.url,
            attempts=5,
            backoff_seconds=60,
        )
        record(conn, [breach()], now=NOW, quiet_minutes=30)
        clock, outcomes = NOW, []
        for _ in range(6):
            result = deliver(conn, targets, now=clock)
            outcomes.append((result.sent, result.failed, result.dead))
            clock += dt.timedelta(hours=1)  # past any backoff
        assert outcomes[0] == (1, 1, 0)  # telegram sent, the webhook failed once
        assert outcomes[1:] == [(0, 1, 0)] * 3 + [(0, 0, 1), (0, 0, 0)]
        row = conn.execute("SELECT attempts, last_error FROM alert_deliveries "
                           "WHERE target = 'webhook'").fetchone()  # fmt: skip
        assert row[0] == 5 and "HTTP 500" in row[1]
        assert deliveries(conn) == [
            ("opened", "telegram", "sent", 1),
            ("opened", "webhook", "dead", 5),
        ]
        # the target is back: the dead letter is sent again on request
        webhook.failures = 0
        assert retry_dead(conn) == 1
        assert deliver(conn, targets).sent == 1
        assert len(webhook.wait(1)) == 1


def test_a_failure_waits_its_backoff(conn):
    with Receiver(failures=1) as receiver:
        targets = AlertTargets(webhook_url=receiver.url, backoff_seconds=30)
        record(conn, [breach()], now=NOW, quiet_minutes=30)
        first = deliver(conn, targets, now=NOW)
        assert first.failed == 1 and first.next_due == NOW + dt.timedelta(seconds=30)
        assert deliver(conn, targets, now=NOW + dt.timedelta(seconds=29)).sent == 0
        assert deliver(conn, targets, now=NOW + dt.timedelta(seconds=30)).sent == 1


def test_the_cooldown_holds_the_next_message_about_an_incident(conn):
    with Receiver() as receiver:
        targets = AlertTargets(webhook_url=receiver.url, cooldown_minutes=10)
        record(conn, [breach()], now=NOW, quiet_minutes=30)
        record(conn, [breach(peak=7, minutes=1)], now=NOW, quiet_minutes=30)  # escalated
        first = deliver(conn, targets, now=NOW + dt.timedelta(minutes=1))
        assert (first.sent, first.held) == (1, 1)
        assert deliver(conn, targets, now=NOW + dt.timedelta(minutes=5)).sent == 0
        assert deliver(conn, targets, now=NOW + dt.timedelta(minutes=11)).sent == 1
        events = [r.body["event"] for r in receiver.wait(2)]
    assert events == ["opened", "escalated"]


def test_a_change_older_than_max_age_is_kept_as_stale_not_sent(conn):
    with Receiver() as receiver:
        targets = AlertTargets(webhook_url=receiver.url, max_age_minutes=60)
        old = breach(minutes=-24 * 60)  # a backfill of yesterday
        record(conn, [old], now=old.last, quiet_minutes=30)
        result = deliver(conn, targets)
        assert (result.sent, result.stale) == (0, 1)
        assert receiver.requests == []
    assert deliveries(conn) == [("opened", "webhook", "stale", 0)]


def test_no_target_no_delivery_and_a_target_set_later_sends_only_what_is_new(conn):
    record(conn, [breach("before")], now=NOW, quiet_minutes=30)
    assert deliver(conn, AlertTargets()).sent == 0
    with Receiver() as receiver:
        record(conn, [breach("after")], now=NOW, quiet_minutes=30)
        assert deliver(conn, AlertTargets(webhook_url=receiver.url)).sent == 1
        assert [r.body["incident"]["subject"] for r in receiver.wait(1)] == ["after"]


def test_the_command_hook_in_a_dry_run_keeps_what_it_would_have_given(conn):
    targets = AlertTargets(command="panel-disable --user", command_dry_run=True)
    [incident] = record(conn, [breach()], now=NOW, quiet_minutes=30).opened
    record(conn, [breach(peak=7)], now=NOW, quiet_minutes=30)  # escalated: no command
    assert deliver(conn, targets).sent == 1
    action = conn.execute("SELECT action FROM incidents WHERE id = %s", (incident,)).fetchone()[0]
    assert action["dry_run"] is True and action["command"] == "panel-disable --user"
    assert action["stdin"]["incident"]["subject"] == "sharer"
    assert "returncode" not in action


def test_the_command_hook_runs_with_the_incident_on_stdin(conn, tmp_path: Path):
    out = tmp_path / "disabled.json"
    script = tmp_path / "disable.py"
    script.write_text(
        "import json, sys\n"
        "incident = json.load(sys.stdin)['incident']\n"
        f"open({str(out)!r}, 'w').write(json.dumps(incident))\n"
        "print('disabled', incident['subject'])\n"
    )
    targets = AlertTargets(command=f"{sys.executable} {script}", command_dry_run=False)
    [incident] = record(conn, [breach()], now=NOW, quiet_minutes=30).opened
    assert deliver(conn, targets).sent == 1
    assert json.loads(out.read_text())["subject"] == "sharer"
    action = conn.execute("SELECT action FROM incidents WHERE id = %s", (incident,)).fetchone()[0]
    assert action["returncode"] == 0 and action["stdout"] == "disabled sharer\n"


def test_a_failing_command_is_retried_and_its_output_kept(conn, tmp_path: Path):
    targets = AlertTargets(
        command=f"{sys.executable} -c \"import sys; sys.exit('panel refused')\"",
        command_dry_run=False,
        attempts=1,
    )
    [incident] = record(conn, [breach()], now=NOW, quiet_minutes=30).opened
    assert deliver(conn, targets).dead == 1
    action = conn.execute("SELECT action FROM incidents WHERE id = %s", (incident,)).fetchone()[0]
    assert action["returncode"] == 1 and "panel refused" in action["stderr"]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"telegram_token": "t"}, "telegram_chat_id"),
        ({"telegram_chat_id": "c"}, "telegram_token"),
        ({"webhook_url": "hooks.example"}, "webhook_url"),
        ({"command": "disable 'unclosed"}, "on_open_command"),
    ],
)
def test_a_wrong_setting_is_named(options: dict, named: str):
    with pytest.raises(AlertsError, match=named):
        AlertTargets(**options)
