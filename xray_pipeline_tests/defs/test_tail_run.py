"""The tail run: one long-lived run loads the current day's lines as they come, and the sensor
starts it, leaves the day to it, and replaces it when its process is gone."""

import datetime as dt
import json
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.definitions import build_definitions
from xray_pipeline.defs.tail import DAY_TAG, HEARTBEAT_TAG, STALE_AFTER_S, TAIL_JOB
from xray_pipeline.settings import load_settings

# the lines are stamped now and the runs follow today
pytestmark = pytest.mark.usefixtures("same_day")


def today_line(i: int, day: dt.date | None = None) -> str:
    now = dt.datetime.now(dt.UTC)
    stamp = now if day is None else dt.datetime.combine(day, now.time())
    return (
        f"{stamp:%Y/%m/%d %H:%M:%S}.{i:06d} from 198.51.100.7:1 accepted "
        f"tcp:tail.example:443 [in >> out] email: t{i % 3}\n"
    )


def make_defs(db_url: str, *logfiles: Path, **extra) -> dg.Definitions:
    overrides = {
        "postgresql.url": db_url,
        "parser.logfile": [str(p) for p in logfiles],
        "parser.timezone": "UTC",
        "dagster.start_date": "2024-12-01",
        **extra,
    }
    if logfiles:  # the state folder beside the logs, not the project's (a demo's landed files)
        overrides.setdefault("general.home", str(Path(logfiles[0]).parent / "home"))
    return build_definitions(load_settings(None, overrides, env={}))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None):
    sensor = defs.resolve_sensor_def("access_log_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
    return sensor(context)


def run_tail(defs: dg.Definitions, instance: dg.DagsterInstance, *, minutes: float):
    """A tail run of today for `minutes`, looking every 0.2 s, in this process."""
    return defs.resolve_job_def(TAIL_JOB).execute_in_process(
        run_config={
            "ops": {
                "tail_logs": {"config": {"day": today(), "minutes": minutes, "poll_seconds": 0.2}}
            }
        },
        instance=instance,
    )


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def test_a_tail_run_loads_each_new_line_once_and_reports_each_load(
    fresh_db_url: str, tmp_path: Path, instance
):
    stuck = tmp_path / "stuck.log"
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date()
    stuck.write_text("".join(today_line(i, yesterday) for i in range(3)) + today_line(99))
    path = tmp_path / "access.log"
    path.write_text(today_line(100))
    defs = make_defs(fresh_db_url, stuck, path)
    written = 1

    def append() -> None:
        nonlocal written
        for i in range(12):
            with path.open("a") as fh:
                fh.write(today_line(i) + today_line(50 + i))
            written += 2
            time.sleep(0.25)

    writer = threading.Thread(target=append)
    writer.start()
    result = run_tail(defs, instance, minutes=0.08)
    writer.join()
    assert result.success
    reported = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    loads = [m for m in reported if m.asset_key == dg.AssetKey("logs")]
    judged = [m for m in reported if m.asset_key == dg.AssetKey("incidents")]
    assert len(loads) >= 3  # a load per poll that found new lines, while they came
    assert len(loads) + len(judged) == len(reported)
    assert {m.partition for m in reported} == {today()}
    # each load's rows judged once (the loads of a few seconds together), the evaluations
    # reported together (none changed anything)
    assert sum(m.metadata["evaluated_rows"].value for m in judged) >= written
    assert 1 <= sum(m.metadata["evaluations"].value for m in judged) < len(loads)
    assert judged[-1].metadata["open_incidents"].value == 0
    assert sum(m.metadata["lines"].value for m in loads) == written
    # each load's row count is the day partition's rows so far; its own rows are `rows`
    assert loads[-1].metadata["dagster/row_count"].value == written
    assert sum(m.metadata["rows"].value for m in loads) == written
    assert all(m.metadata["lag_seconds"].value < 30 for m in loads)
    with connect(fresh_db_url) as conn:
        days = conn.execute(
            "SELECT ts::date::text, count(*) FROM logs GROUP BY 1 ORDER BY 1"
        ).fetchall()
        runs = conn.execute("SELECT DISTINCT run_id FROM ingest_ledger").fetchall()
    # yesterday's lines, first in their file, are left to a sensor run of yesterday: the tail
    # loads none of that source (today's line after them neither), and nothing twice
    assert days == [(today(), written)]
    assert runs == [(result.run_id,)]
    assert instance.get_run_by_id(result.run_id).tags[HEARTBEAT_TAG]


def test_the_sensor_hands_the_current_day_to_one_tail_run(
    fresh_db_url: str, tmp_path: Path, instance
):
    path = tmp_path / "access.log"
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date()
    path.write_text(today_line(0, yesterday) + today_line(1))
    defs = make_defs(fresh_db_url, path, **{"dagster.tail_minutes": 30})
    first = tick(defs, instance)
    by_job = {r.job_name: r for r in first.run_requests}
    assert sorted(by_job) == ["load_logs_job", TAIL_JOB]
    assert by_job["load_logs_job"].partition_key == yesterday.isoformat()  # an older day
    tail = by_job[TAIL_JOB]
    assert tail.tags[DAY_TAG] == today()
    assert tail.run_config["ops"]["tail_logs"]["config"] == {
        "day": today(),
        "minutes": 30,
        "poll_seconds": 1.0,
    }
    # run monitoring fails it if it outlives its minutes by far (see dagster.yaml)
    assert int(tail.tags["dagster/max_runtime"]) > 30 * 60
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def(TAIL_JOB),
        run_config=tail.run_config,
        tags=tail.tags,
        status=dg.DagsterRunStatus.STARTED,
    )
    instance.add_run_tags(run.run_id, {HEARTBEAT_TAG: str(int(time.time()))})
    with path.open("a") as fh:
        fh.write(today_line(2))
    # the day is the tail run's: nothing is requested for it, nothing is marked in flight
    later = tick(defs, instance, cursor=first.cursor)
    assert not later.run_requests
    assert json.loads(later.cursor) == json.loads(first.cursor)

    # its process died without a word (killed with the machine): once its heartbeat is
    # stale, the sensor fails it and, for a minute, the day goes to sensor runs
    instance.add_run_tags(run.run_id, {HEARTBEAT_TAG: str(int(time.time() - STALE_AFTER_S - 5))})
    stale = tick(defs, instance, cursor=first.cursor)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    [batch] = stale.run_requests
    assert batch.job_name == "load_logs_job" and batch.partition_key == today()


def test_no_tail_runs_with_tail_minutes_0(fresh_db_url: str, tmp_path: Path, instance):
    path = tmp_path / "access.log"
    path.write_text(today_line(0))
    defs = make_defs(fresh_db_url, path, **{"dagster.tail_minutes": 0})
    [request] = tick(defs, instance).run_requests
    assert request.job_name == "load_logs_job" and request.partition_key == today()


def test_rollups_of_the_current_day_refresh_at_most_every_quarter_hour(tmp_path: Path, instance):
    """A tail run materializes the current day every second or so: its rollups are rebuilt
    at most once a quarter hour; an older day's as soon as it changed."""
    defs = make_defs("postgresql://nobody@127.0.0.1:1/none", tmp_path / "access.log")
    past = "2025-01-01"

    @dg.op(config_schema={"days": [str]})
    def report(context: dg.OpExecutionContext) -> None:
        for day in context.op_config["days"]:
            context.log_event(dg.AssetMaterialization(asset_key="logs", partition=day))

    reporter = dg.GraphDefinition(name="reporter", node_defs=[report]).to_job()

    def loads(*days: str) -> None:
        config = {"ops": {"report": {"config": {"days": list(days)}}}}
        assert reporter.execute_in_process(run_config=config, instance=instance).success

    cursor = None
    start = dt.datetime.now(dt.UTC).replace(minute=1, second=0, microsecond=0)

    def requested(minutes: int) -> set[str]:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            cursor=cursor,
            evaluation_time=start + dt.timedelta(minutes=minutes),
        )
        cursor = result.cursor
        return {
            key
            for r in result.results
            if r.key == dg.AssetKey("daily_traffic")
            for key in r.true_subset.expensively_compute_partition_keys()
        }

    # evaluated every minute (rollups_automation_sensor evaluates every 30 s), from hh:01
    assert requested(0) == set()
    loads(past, today())
    assert requested(1) == {past}  # an older day: at once
    when = []
    for minute in range(2, 47):
        if minute in (3, 20, 21):
            loads(today())
        if today() in requested(minute):
            when.append(minute)
    # today: at hh:15 (it changed at hh:04), at hh:30 (it changed at hh:21 and hh:22), not
    # at hh:45 (no change since)
    assert when == [14, 29]


def test_a_tail_run_follows_nodes_that_land_their_first_range_after_it_started(
    fresh_db_url: str, tmp_path: Path, instance
):
    from xray_pipeline.core.fleet.landing import land

    home = tmp_path / "home"
    landed = home / "landed"
    local = tmp_path / "access.log"
    local.write_text(today_line(0))
    defs = make_defs(fresh_db_url, local, **{"general.home": str(home)})

    def ship() -> None:
        time.sleep(0.6)  # the run is going by now
        for node in ("late-1", "late-2"):
            body = (today_line(1) + today_line(2)).encode()
            land(landed, node, f"{node}:1", "/var/log/xray/access.log", 0, body)

    shipper = threading.Thread(target=ship)
    shipper.start()
    result = run_tail(defs, instance, minutes=0.05)
    shipper.join()
    assert result.success
    with connect(fresh_db_url) as conn:
        rows = conn.execute(
            "SELECT s.node, count(*) FROM logs l JOIN sources s ON s.id = l.source_id "
            "GROUP BY 1 ORDER BY 1 NULLS FIRST"
        ).fetchall()
    assert rows == [(None, 1), ("late-1", 2), ("late-2", 2)]
