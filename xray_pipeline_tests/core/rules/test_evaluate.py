"""The rules over what a load added, on a real database: the planted sharer and the storm are
found with their evidence, the others are not, and evaluating again duplicates nothing."""

import datetime as dt
from pathlib import Path

import psycopg

from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.rules.detect import IpLimitRule, RejectedRule, TaggedRule
from xray_pipeline.core.rules.evaluate import Candidates, RulesConfig, evaluate

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def line(second: int, user: str | None, source: str, tag: str = "direct", status: str = "accepted"):
    ts = (T0 + dt.timedelta(seconds=second)).strftime("%Y/%m/%d %H:%M:%S")
    who = f" email: {user}" if user else ""
    return f"{ts} from {source}:1 {status} tcp:a.example:443 [in >> {tag}]{who}\n"


def load(conn: psycopg.Connection, path: Path, lines: list[str]):
    with path.open("a") as fh:
        fh.writelines(lines)
    return ingest_files(conn, [path], timezone="UTC", batch_size=1 << 20)


CONFIG = RulesConfig(
    ip_limit=IpLimitRule(limit=2, window_minutes=10, count_by="address"),
    tagged=TaggedRule(tags=("TORRENT",), limit=5, window_minutes=10),
    rejected=RejectedRule(limit=10, window_minutes=5),
)


def test_planted_cases_are_found_once_with_their_evidence(conn, tmp_path: Path):
    log = tmp_path / "access.log"
    lines = [line(i, "sharer", f"192.0.2.{i}") for i in range(4)]
    lines += [line(10 + i, "honest", "198.51.100.7") for i in range(20)]
    lines += [line(40 + i, "seeder", "198.51.100.8", tag="TORRENT") for i in range(8)]
    lines += [line(60 + i, None, "203.0.113.66", status="rejected") for i in range(12)]
    load(conn, log, lines)
    result = evaluate(conn, T0, T0 + dt.timedelta(seconds=80), CONFIG).recorded
    assert len(result.opened) == 3
    found = conn.execute(
        "SELECT rule, subject, peak, jsonb_array_length(evidence) FROM incidents ORDER BY 1"
    ).fetchall()
    assert found == [
        ("ip_limit", "sharer", 4, 4),
        ("rejected", "203.0.113.66", 12, 1),
        ("tagged", "seeder", 8, 1),
    ]
    again = evaluate(conn, T0, T0 + dt.timedelta(seconds=80), CONFIG).recorded  # a retry
    assert again.opened == [] and len(again.updated) == 3
    assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 3


def test_a_later_load_updates_the_open_incident_and_its_rows_alone_are_judged(conn, tmp_path):
    log = tmp_path / "access.log"
    load(conn, log, [line(i, "sharer", f"192.0.2.{i}") for i in range(3)])
    [incident] = evaluate(conn, T0, T0 + dt.timedelta(seconds=3), CONFIG).recorded.opened
    # the next load: one more address; the earlier rows are its context
    load(conn, log, [line(120, "sharer", "192.0.2.99")])
    later = evaluate(
        conn, T0 + dt.timedelta(seconds=120), T0 + dt.timedelta(seconds=120), CONFIG
    ).recorded
    assert later.updated == [incident] and later.opened == []
    assert conn.execute("SELECT peak FROM incidents").fetchone()[0] == 4
    # a load of a user within the limit opens nothing, whatever the history around it
    load(conn, log, [line(130, "honest", "198.51.100.1")])
    quiet = evaluate(
        conn, T0 + dt.timedelta(seconds=130), T0 + dt.timedelta(seconds=130), CONFIG
    ).recorded
    assert quiet.opened == [] and quiet.updated == []


def test_a_per_user_limit(conn, tmp_path: Path):
    log = tmp_path / "access.log"
    load(conn, log, [line(i, "family", f"192.0.2.{i}") for i in range(4)])
    conn.execute(
        "INSERT INTO user_limits (user_id, ip_limit) SELECT id, 5 FROM users WHERE email = 'family'"
    )
    conn.commit()
    assert evaluate(conn, T0, T0 + dt.timedelta(seconds=4), CONFIG).recorded.opened == []


def test_a_long_run_finds_its_candidates_from_the_new_rows_alone(conn, tmp_path: Path):
    log = tmp_path / "access.log"
    candidates = Candidates(CONFIG)
    seen = []

    def step(second: int, lines: list[str]) -> list[int]:
        load(conn, log, lines)
        at = T0 + dt.timedelta(seconds=second)
        return evaluate(conn, at, at, CONFIG, candidates).recorded.opened

    # the first evaluation reads the window (and counts in the database)
    assert step(0, [line(0, "heavy", "192.0.2.1"), line(0, "mover", "198.51.100.1")]) == []
    assert candidates.covered_from is not None
    for s in range(1, 30):  # an honest heavy user: two sources, a row every second
        seen += step(s, [line(s, "heavy", f"192.0.2.{1 + s % 2}")])
        assert candidates.users(conn, _at(conn, s)) == []  # never a candidate, never read
    assert seen == []
    # the mover's third and fourth sources: a candidate from the new rows, then an incident
    assert step(30, [line(30, "mover", "198.51.100.2")]) == []
    [opened] = step(31, [line(31, "mover", "198.51.100.3")])
    subject = conn.execute("SELECT subject FROM incidents WHERE id = %s", (opened,)).fetchone()
    assert subject == ("mover",)
    # a late node's rows from before the covered time: counted in the database again
    late = evaluate_params(conn, T0 - dt.timedelta(hours=1))
    assert candidates.users(conn, late) is None


def _at(conn: psycopg.Connection, second: int) -> dict:
    return evaluate_params(conn, T0 + dt.timedelta(seconds=second))


def evaluate_params(conn: psycopg.Connection, at: dt.datetime) -> dict:
    from xray_pipeline.core.rules.evaluate import _params

    return _params(conn, at, at, CONFIG)
