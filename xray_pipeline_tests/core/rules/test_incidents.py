"""Incidents as rows: opened once, updated (not duplicated) across loads and retried runs,
escalated once, closed after a quiet period; each state change written once."""

import datetime as dt

import psycopg

from xray_pipeline.core.rules.detect import Breach
from xray_pipeline.core.rules.incidents import record

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
QUIET = 30


def breach(minute: int, peak: int = 4, subject: str = "sharer") -> Breach:
    at = T0 + dt.timedelta(minutes=minute)
    evidence = [{"unit": f"192.0.2.{i}", "first_seen": at, "nodes": ["n1"]} for i in range(peak)]
    return Breach("ip_limit", subject, at, at, peak, 3, evidence)


def changes(conn: psycopg.Connection) -> list[tuple]:
    found = conn.execute(
        "SELECT incident_id, change, peak FROM incident_changes ORDER BY id"
    ).fetchall()
    conn.commit()
    return found


def test_an_incident_is_updated_not_duplicated_then_escalated_and_closed(conn):
    first = record(conn, [breach(0)], now=T0, quiet_minutes=QUIET)
    [incident] = first.opened
    again = record(conn, [breach(0)], now=T0, quiet_minutes=QUIET)  # a retried run
    assert again.opened == [] and again.updated == [incident]
    later = record(conn, [breach(10, peak=5)], now=T0 + dt.timedelta(minutes=10),
                   quiet_minutes=QUIET)  # fmt: skip
    assert later.updated == [incident] and later.escalated == []
    worse = record(conn, [breach(12, peak=7)], now=T0 + dt.timedelta(minutes=12),
                   quiet_minutes=QUIET)  # fmt: skip
    assert worse.escalated == [incident]
    record(conn, [breach(13, peak=8)], now=T0 + dt.timedelta(minutes=13), quiet_minutes=QUIET)
    row = conn.execute(
        "SELECT count(*), max(peak), max(last_seen), max(jsonb_array_length(evidence)) "
        "FROM incidents"
    ).fetchone()
    assert row == (1, 8, T0 + dt.timedelta(minutes=13), 8)  # the evidence at the highest peak
    quiet = record(conn, [], now=T0 + dt.timedelta(minutes=60), quiet_minutes=QUIET)
    assert quiet.closed == [incident]
    closed_at = conn.execute("SELECT closed_at FROM incidents").fetchone()[0]
    assert closed_at == T0 + dt.timedelta(minutes=13 + QUIET)
    assert changes(conn) == [
        (incident, "opened", 4),
        (incident, "escalated", 7),
        (incident, "closed", 8),
    ]


def test_a_breach_after_the_quiet_period_is_a_new_incident(conn):
    [old] = record(conn, [breach(0)], now=T0, quiet_minutes=QUIET).opened
    # the evaluation of a later load: nothing closed it in between
    later = record(conn, [breach(90)], now=T0 + dt.timedelta(minutes=90), quiet_minutes=QUIET)
    [new] = later.opened
    assert new != old and later.closed == [old]
    states = conn.execute("SELECT id, state FROM incidents ORDER BY id").fetchall()
    assert states == [(old, "closed"), (new, "open")]
    assert [c[1] for c in changes(conn)] == ["opened", "closed", "opened"]


def test_subjects_and_rules_are_apart(conn):
    result = record(
        conn,
        [breach(0, subject="a"), breach(0, subject="b"),
         Breach("tagged", "a", T0, T0, 30, 20, [])],
        now=T0,
        quiet_minutes=QUIET,
    )  # fmt: skip
    assert len(result.opened) == 3
