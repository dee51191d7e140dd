"""The rules in the running pipeline: a tail run over two nodes judges each load, opens one
incident for a sharer seen on both, and sends its webhook at once, signed, once (a retried
run sends nothing again); a webhook that keeps failing ends in the dead letter while every
line still loads; the `incidents` backfill re-evaluates a day under changed rules."""

import datetime as dt
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from xray_pipeline.core.alerts.receiver import Receiver
from xray_pipeline.core.db.connect import connect
from xray_pipeline_tests.defs.test_tail_run import make_defs, run_tail

SECRET = "a-webhook-secret-for-tests"

# the lines are stamped now and the runs follow today
pytestmark = pytest.mark.usefixtures("same_day")


def line(user: str, ip: str, when: dt.datetime | None = None, tag: str = "out") -> str:
    stamp = when or dt.datetime.now(dt.UTC)
    return (
        f"{stamp:%Y/%m/%d %H:%M:%S.%f} from {ip}:1 accepted tcp:a.example:443 [in >> {tag}] "
        f"email: {user}\n"
    )


def two_nodes(tmp_path: Path) -> tuple[Path, Path]:
    paths = []
    for node in ("n1", "n2"):
        path = tmp_path / node / "access.log"
        path.parent.mkdir()
        path.write_text(line("honest", "198.51.100.7"))
        paths.append(path)
    return paths[0], paths[1]


def test_a_sharer_over_two_nodes_is_one_incident_sent_once(fresh_db_url, tmp_path, instance):
    n1, n2 = two_nodes(tmp_path)
    with Receiver(secret=SECRET.encode()) as receiver:
        defs = make_defs(fresh_db_url, **{
            "parser.logfile": [f"n1={n1}", f"n2={n2}"], "general.home": str(tmp_path / "home"),
            "alerts.webhook_url": receiver.url, "alerts.webhook_secret": SECRET,
        })  # fmt: skip
        appended: list[float] = []

        def share() -> None:  # two sources on each node: four over the limit of three
            time.sleep(1.0)
            for i, path in enumerate((n1, n2, n1, n2)):
                with path.open("a") as fh:
                    fh.write(line("sharer", f"10.{i}.0.1"))
                appended.append(time.time())
                time.sleep(0.3)

        writer = threading.Thread(target=share)
        writer.start()
        result = run_tail(defs, instance, minutes=0.12)
        writer.join()
        assert result.success
        got = receiver.wait(1, timeout=5)
        assert [r.body["event"] for r in got] == ["opened"]
        [hook] = got
        assert hook.signed is True
        incident = hook.body["incident"]
        assert incident["subject"] == "sharer" and incident["peak"] == 4
        assert {n for u in incident["evidence"] for n in u["nodes"]} == {"n1", "n2"}
        assert hook.at - appended[-1] < 5  # sent by the run itself, not a later sensor tick
        judged = [
            e.event_specific_data.materialization
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            and e.event_specific_data.materialization.asset_key == dg.AssetKey("incidents")
        ]
        assert sum(m.metadata["opened"].value for m in judged) == 1
        assert judged[-1].metadata["open_incidents"].value == 1

        # a retried run (the same day, nothing new): no second incident, no second message
        assert run_tail(defs, instance, minutes=0.03).success
        sensor = defs.resolve_sensor_def("incident_alerts_sensor")
        tick = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        assert "sent 0" in tick.skip_message
        assert len(receiver.wait(2, timeout=1)) == 1
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1


def test_a_failing_webhook_ends_in_the_dead_letter_and_loading_goes_on(
    fresh_db_url, tmp_path, instance
):
    n1, n2 = two_nodes(tmp_path)
    with Receiver(failures=1000) as receiver:
        defs = make_defs(fresh_db_url, **{
            "parser.logfile": [f"n1={n1}", f"n2={n2}"], "general.home": str(tmp_path / "home"),
            "alerts.webhook_url": receiver.url, "alerts.attempts": 5,
            "alerts.backoff_seconds": 0.1,
        })  # fmt: skip
        written = 2

        def write() -> None:
            nonlocal written
            for i in range(20):
                with n1.open("a") as fh:
                    fh.write(line("sharer", f"10.{i}.0.1"))
                written += 1
                time.sleep(0.2)

        writer = threading.Thread(target=write)
        writer.start()
        result = run_tail(defs, instance, minutes=0.15)
        writer.join()
        assert result.success
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == written
        dead = conn.execute(
            "SELECT c.change, d.status, d.attempts, d.last_error FROM alert_deliveries d "
            "JOIN incident_changes c ON c.id = d.change_id ORDER BY c.id"
        ).fetchall()
    # 21 sources: opened, then escalated; neither sent, each tried five times
    assert [(c, s, a) for c, s, a, _ in dead] == [("opened", "dead", 5), ("escalated", "dead", 5)]
    assert all("HTTP 500" in row[3] for row in dead)
    checks = defs.resolve_job_def("check_logs_job").execute_in_process(instance=instance)
    [delivered] = [
        e.event_specific_data
        for e in checks.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == "incidents_alerts_delivered"
    ]
    assert not delivered.passed and delivered.metadata["dead"].value == 2


def test_the_incidents_backfill_re_evaluates_a_day_under_changed_rules(
    fresh_db_url, tmp_path, instance
):
    day = dt.date(2025, 3, 4)
    log = tmp_path / "access.log"
    start = dt.datetime.combine(day, dt.time(12), dt.UTC)
    lines = [line("family", f"10.{i}.0.1", start + dt.timedelta(seconds=i)) for i in range(4)]
    lines += [line("family", f"10.{i}.0.1", start + dt.timedelta(hours=3, seconds=i))
              for i in range(4)]  # fmt: skip
    log.write_text("".join(lines))
    defs = make_defs(fresh_db_url, log)
    with connect(fresh_db_url) as conn:
        from xray_pipeline.core.ingest.oneshot import ingest_files

        ingest_files(conn, [log], timezone="UTC", batch_size=1 << 20)
    incidents = defs.resolve_assets_def("incidents")
    done = dg.materialize([incidents], partition_key=day.isoformat(), instance=instance)
    metadata = done.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["opened"].value == 2  # two episodes, three hours apart
    assert metadata["replaced"].value == 0
    # the family's plan allows five: the re-evaluation replaces the day's incidents
    looser = make_defs(fresh_db_url, log, **{"rules.ip_limit": 5})
    again = dg.materialize(
        [looser.resolve_assets_def("incidents")], partition_key=day.isoformat(), instance=instance
    )
    metadata = again.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["replaced"].value == 2 and metadata["opened"].value == 0
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 0
