"""The Dagster code location: definitions, sensor ticks, and a sensor range materialized."""

import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.plan import MAX_HOLE_ATTEMPTS
from xray_pipeline.definitions import build_definitions
from xray_pipeline.defs.sensors import RUN_MAX_RUNTIME_S
from xray_pipeline.settings import load_settings


def line(day: int, second: int, user: str = "u1") -> str:
    return (
        f"2025/01/{day:02d} 12:00:{second:02d}.000001 from 198.51.100.7:40000 accepted "
        f"tcp:a.example:443 [in >> out] email: {user}\n"
    )


def make_defs(db_url: str, *logfiles: Path, **extra) -> dg.Definitions:
    overrides = {
        "postgresql.url": db_url,
        "parser.logfile": [str(p) for p in logfiles],
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


def ranges(request: dg.RunRequest) -> list[dict]:
    """The byte ranges a requested run loads."""
    return request.run_config["ops"]["logs"]["config"]["ranges"]


def skip_text(result) -> str:
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    assert not result.run_requests
    return result.skip_reason.skip_message


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest):
    job = defs.resolve_job_def("load_logs_job")
    return job.execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key, instance=instance
    )


def logs_metadata(result) -> dict:
    """The metadata of the run's materialization of `logs`."""
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("logs")
    ]
    return event.materialization.metadata


def test_definitions_are_pinned(tmp_path: Path):
    defs = make_defs("postgresql://u@127.0.0.1:1/x", tmp_path / "access.log")
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == {
        "logs",
        "daily_traffic",
        "daily_user_ips",
        "daily_user_destinations",
        "daily_user_activity",
        "hourly_traffic",
        "daily_totals",
        "daily_node_users",
        "daily_places",
        "ip_places",
        "incidents",
        "offline_buffer",
        "logs_archive",
    }
    assert sorted(s.name for s in repo.sensor_defs) == [
        "access_log_sensor",
        "archive_automation_sensor",
        "incident_alerts_sensor",
        "offline_buffer_sensor",
        "rollups_automation_sensor",
    ]
    assert sorted(s.name for s in repo.schedule_defs) == [
        "data_quality_schedule",
        "partition_maintenance_schedule",
        "prune_dagster_runs_job_schedule",
    ]
    assert {j.name for j in repo.get_all_jobs()} >= {
        "load_logs_job",
        "check_logs_job",
        "partition_maintenance_job",
        "replay_offline_buffer_job",
        "migrate_legacy_logs_job",
        "prune_dagster_runs_job",
    }
    assert {c.name for c in repo.asset_graph.asset_check_keys} == {
        "logs_reconciliation",
        "logs_ledger_contiguity",
        "logs_reject_rate",
        "logs_freshness",
        "daily_traffic_matches_logs",
        "daily_places_matches_logs",
        "daily_user_ips_matches_logs",
        "daily_user_destinations_matches_logs",
        "daily_user_activity_matches_logs",
        "hourly_traffic_matches_logs",
        "daily_totals_matches_logs",
        "daily_node_users_matches_logs",
        "logs_node_silence",
        "offline_buffer_not_stale",
        "incidents_consistent",
        "logs_archive_matches_logs",
        "logs_archive_verified",
        "incidents_alerts_delivered",
    }
    sensor = defs.resolve_sensor_def("access_log_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    logs = defs.resolve_assets_def("logs")
    partitions = logs.partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.get_partition_keys()[0] == "2024-12-01"


def test_a_skip_without_a_log_file_says_how_to_configure_one(
    fresh_db_url: str, tmp_path: Path, instance
):
    defs = make_defs(fresh_db_url, **{"general.home": str(tmp_path / "home")})
    text = skip_text(tick(defs, instance))
    assert "no log file configured" in text and "xray-pipeline nodes add" in text


def test_a_skip_names_a_log_file_not_found(fresh_db_url: str, tmp_path: Path, instance):
    missing = tick(make_defs(fresh_db_url, tmp_path / "access.log"), instance)
    assert "no new complete lines" in skip_text(missing) and "not found" in skip_text(missing)


def test_a_skip_says_the_database_is_unreachable(tmp_path: Path, instance):
    path = tmp_path / "access.log"
    path.write_text(line(1, 0))
    down = tick(make_defs("postgresql://u@127.0.0.1:1/x", path), instance)
    assert "database unreachable" in skip_text(down)


def test_a_partial_last_line_waits_for_its_newline(fresh_db_url: str, tmp_path: Path, instance):
    path = tmp_path / "access.log"
    path.write_text("2025/01/01 12:00:00 from 198.51.100.7:1 acc")  # no complete line yet
    partial = tick(make_defs(fresh_db_url, path), instance)
    assert not partial.run_requests
    assert "no new complete lines" in skip_text(partial)


def test_an_unreadable_path_is_named_and_the_rest_still_read(
    fresh_db_url: str, tmp_path: Path, instance
):
    path = tmp_path / "access.log"
    folder = tmp_path / "logs"  # a folder where the log should be
    folder.mkdir()
    unreadable = tick(make_defs(fresh_db_url, folder, path), instance)
    assert "cannot read" in skip_text(unreadable)
    assert f"{folder} is a folder" in skip_text(unreadable)
    path.write_text(line(1, 0))
    both = tick(make_defs(fresh_db_url, folder, path), instance)
    assert [c["path"] for r in both.run_requests for c in ranges(r)] == [str(path)]


def test_new_bytes_day_split_materialize_and_cursor(fresh_db_url: str, tmp_path: Path, instance):
    path = tmp_path / "access.log"
    text = "".join(line(1, s) for s in range(5)) + "".join(line(2, s) for s in range(3))
    path.write_text(text + "2025/01/02 12:00:59 partial")
    defs = make_defs(fresh_db_url, path)
    result = tick(defs, instance)
    requests = result.run_requests
    assert [r.partition_key for r in requests] == ["2025-01-01", "2025-01-02"]
    boundary = text.index("2025/01/02")
    configs = [c for r in requests for c in ranges(r)]
    assert [(c["start"], c["end"]) for c in configs] == [(0, boundary), (boundary, len(text))]
    assert requests[0].run_key.endswith(f":0-{boundary}")
    # what run monitoring and the hole planning go by (see dagster.yaml)
    assert requests[0].tags["dagster/max_runtime"] == str(RUN_MAX_RUNTIME_S)
    assert requests[0].tags["xray/sources"] == "1"
    cursor = json.loads(result.cursor)
    assert next(iter(cursor.values()))["end"] == len(text)

    # the ranges are in flight: the next tick requests nothing new
    again = tick(defs, instance, cursor=result.cursor)
    assert not again.run_requests

    outputs = [materialize(defs, instance, r) for r in requests]
    assert all(o.success for o in outputs)
    metadata = logs_metadata(outputs[0])
    assert metadata["dagster/row_count"].value == metadata["rows"].value == 5
    assert metadata["lines"].value == 5
    assert metadata["node"].value == "local"  # a local file of no [parser] node
    assert metadata["range"].value == f"0-{boundary}"
    assert metadata["lag_seconds"].value > 0
    with connect(fresh_db_url) as conn:
        rows = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM logs GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("logs_2025_01_01", 5), ("logs_2025_01_02", 3)]

    # a second run of the same range loads nothing twice
    rerun = materialize(defs, instance, requests[0])
    again_metadata = rerun.get_asset_materialization_events()[0].materialization.metadata
    assert again_metadata["chunks_already_loaded"].value == 1
    # the UI's row count is the partition's rows; this load's own are none
    assert again_metadata["dagster/row_count"].value == 5 and again_metadata["rows"].value == 0

    # the partial line completes: only it is requested
    with path.open("a") as fh:
        fh.write("\n")
    later = tick(defs, instance, cursor=result.cursor)
    [req] = later.run_requests
    assert ranges(req)[0]["start"] == len(text)


def test_rotation_rename_copytruncate_and_truncation(fresh_db_url: str, tmp_path: Path, instance):
    path = tmp_path / "access.log"
    path.write_text("".join(line(1, s) for s in range(4)))
    defs = make_defs(fresh_db_url, path)
    first = tick(defs, instance)
    for r in first.run_requests:
        materialize(defs, instance, r)

    # rename + create: the renamed file's tail and the new file are both requested
    rotated = tmp_path / "access.log.1"
    path.rename(rotated)
    with rotated.open("a") as fh:
        fh.write(line(1, 50, "old-tail"))
    path.write_text(line(1, 55, "new"))
    result = tick(defs, instance, cursor=first.cursor)
    assert len(result.run_requests) == 1  # one day: both files in one run
    configs = sorted((c for r in result.run_requests for c in ranges(r)), key=lambda c: c["path"])
    assert [(Path(c["path"]).name, c["start"]) for c in configs] == [
        ("access.log", 0),
        ("access.log.1", rotated.stat().st_size - len(line(1, 50, "old-tail"))),
    ]
    for r in result.run_requests:
        assert materialize(defs, instance, r).success

    # truncation to zero: the new content starts at offset 0 as a new source
    with path.open("r+") as fh:
        fh.truncate(0)
    path.write_text(line(2, 1, "after-truncate"))
    truncated = tick(defs, instance, cursor=result.cursor)
    [req] = truncated.run_requests
    assert ranges(req)[0]["start"] == 0
    assert req.partition_key == "2025-01-02"
    assert materialize(defs, instance, req).success
    with connect(fresh_db_url) as conn:
        users = {r[0] for r in conn.execute("SELECT email FROM users").fetchall()}
        total = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    assert {"old-tail", "new", "after-truncate"} <= users
    assert total == 7


def test_run_keys_are_stable_for_the_same_range(fresh_db_url: str, tmp_path: Path, instance):
    path = tmp_path / "access.log"
    path.write_text(line(1, 1))
    defs = make_defs(fresh_db_url, path)
    a = tick(defs, instance).run_requests
    b = tick(defs, instance).run_requests  # no cursor: the same range, the same run key
    assert [r.run_key for r in a] == [r.run_key for r in b]


def test_lines_before_start_date_go_to_the_first_partition(fresh_db_url, tmp_path, instance):
    path = tmp_path / "access.log"
    path.write_text("2020/05/05 00:00:00 from 192.0.2.1:1 accepted tcp:x.example:1\n")
    [req] = tick(make_defs(fresh_db_url, path), instance).run_requests
    assert req.partition_key == "2024-12-01"
    today = dt.date.today().isoformat()
    shutil.copy(path, tmp_path / "junk.log")
    (tmp_path / "junk.log").write_text("banner without time\n")
    days = {today, (dt.date.today() + dt.timedelta(days=1)).isoformat()}
    # lines without a time are the newest thing in the file: the current day's, a tail run's
    [tail] = tick(make_defs(fresh_db_url, tmp_path / "junk.log"), instance).run_requests
    assert tail.job_name == "tail_logs_job" and tail.tags["xray/day"] in days
    # or, without tail runs, a sensor run of today
    untailed = make_defs(fresh_db_url, tmp_path / "junk.log", **{"dagster.tail_minutes": 0})
    [junk] = tick(untailed, instance).run_requests
    assert junk.partition_key in days


def test_copytruncate_and_per_file_node(fresh_db_url: str, tmp_path: Path, instance):
    path = tmp_path / "access.log"
    path.write_text("".join(line(1, s) for s in range(3)))
    defs = make_defs(fresh_db_url, Path(f"edge-01={path}"))
    first = tick(defs, instance)
    assert ranges(first.run_requests[0])[0]["node"] == "edge-01"
    for r in first.run_requests:
        materialize(defs, instance, r)
    with path.open("a") as fh:
        fh.write(line(1, 40, "late"))
    shutil.copyfile(path, tmp_path / "access.log.1")
    with path.open("r+") as fh:
        fh.truncate(0)
    path.write_text(line(1, 45, "fresh"))
    result = tick(defs, instance, cursor=first.cursor)
    names = sorted(Path(c["path"]).name for r in result.run_requests for c in ranges(r))
    assert names == ["access.log", "access.log.1"]
    for r in result.run_requests:
        assert materialize(defs, instance, r).success
    with connect(fresh_db_url) as conn:
        users = {r[0] for r in conn.execute("SELECT email FROM users").fetchall()}
        nodes = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT s.node FROM logs l JOIN sources s ON s.id = l.source_id"
            ).fetchall()
        }
        total = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    assert {"late", "fresh"} <= users
    assert nodes == {"edge-01"}
    assert total == 5


def test_a_range_whose_run_failed_is_requested_again(fresh_db_url: str, tmp_path: Path, instance):
    """A run that failed (here: at launch, as when PostgreSQL went away under Dagster) leaves
    a hole in the ledger once later ranges load: the sensor requests it again under a new key
    once no run of it is in flight, and gives up, saying so, after MAX_HOLE_ATTEMPTS runs."""
    path = tmp_path / "access.log"
    path.write_text("".join(line(1, s) for s in range(3)) + "".join(line(2, s) for s in range(2)))
    defs = make_defs(fresh_db_url, path)
    job = defs.resolve_job_def("load_logs_job")
    first = tick(defs, instance)
    day1, day2 = first.run_requests

    def record_run(request: dg.RunRequest, key: str, status: dg.DagsterRunStatus) -> None:
        instance.create_run_for_job(
            job_def=job,
            run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": key},
            status=status,
        )

    record_run(day1, day1.run_key, dg.DagsterRunStatus.FAILURE)  # the failed run
    assert materialize(defs, instance, day2).success  # a later range loads
    again = tick(defs, instance, cursor=first.cursor)
    [retry] = again.run_requests
    assert retry.run_key == f"{day1.run_key}#hole1"
    assert retry.run_config == day1.run_config and retry.partition_key == "2025-01-01"

    record_run(retry, retry.run_key, dg.DagsterRunStatus.STARTED)  # in flight: not again
    assert "runs in flight" in skip_text(tick(defs, instance, cursor=again.cursor))

    assert materialize(defs, instance, retry).success
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 5
    assert not tick(defs, instance, cursor=again.cursor).run_requests

    # a range that no run manages to load is given up on after MAX_HOLE_ATTEMPTS runs
    path.write_text(path.read_text() + line(3, 0) + line(4, 0))
    later = tick(defs, instance, cursor=again.cursor)
    day3, day4 = later.run_requests
    keys = [day3.run_key, *(f"{day3.run_key}#hole{n}" for n in range(1, MAX_HOLE_ATTEMPTS))]
    for key in keys:
        record_run(day3, key, dg.DagsterRunStatus.FAILURE)
    assert materialize(defs, instance, day4).success
    stuck = tick(defs, instance, cursor=later.cursor)
    assert not stuck.run_requests
    assert f"hole:{day3.run_key}" in json.loads(stuck.cursor)  # said once, not every tick


def test_instance_config_frees_the_pool_slots_of_a_dead_run():
    """dagster.yaml: a run whose worker died is failed by run monitoring and gives back its
    `xray_postgres` pool slots; held, they stalled every later run (seen in `demo`)."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True and monitoring["max_resume_run_attempts"] == 0
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 300
    assert monitoring["poll_interval_seconds"] < RUN_MAX_RUNTIME_S
    with dg.instance_for_test(overrides={"run_monitoring": monitoring}) as instance:
        assert instance.run_monitoring_enabled


def test_run_retention_prunes_old_runs_but_not_a_partitions_latest_or_the_data(
    fresh_db_url: str, tmp_path: Path, instance
):
    path = tmp_path / "access.log"
    path.write_text(line(1, 0) + line(1, 1))
    defs = make_defs(fresh_db_url, path)
    first = tick(defs, instance)
    [day1_early] = first.run_requests
    assert materialize(defs, instance, day1_early).success
    path.write_text(path.read_text() + line(1, 2) + line(2, 0))
    later = tick(defs, instance, cursor=first.cursor)
    latest = {r.partition_key: materialize(defs, instance, r).run_id for r in later.run_requests}
    assert sorted(latest) == ["2025-01-01", "2025-01-02"]
    failed = instance.create_run_for_job(
        job_def=defs.resolve_job_def("load_logs_job"), status=dg.DagsterRunStatus.FAILURE
    )
    prune = defs.resolve_job_def("prune_dagster_runs_job")

    # within the retention (7 days by default): nothing goes
    assert prune.execute_in_process(instance=instance).success
    assert len(instance.get_run_ids(dg.RunsFilter(job_name="load_logs_job"))) == 4

    config = {"ops": {"prune_dagster_runs": {"config": {"retention_days": 0}}}}
    result = prune.execute_in_process(instance=instance, run_config=config)
    assert result.success
    left = set(instance.get_run_ids(dg.RunsFilter(job_name="load_logs_job")))
    assert left == set(latest.values())  # the early day-1 run and the failed run are gone
    assert failed.run_id not in left
    [output] = [e for e in result.all_node_events if e.is_successful_output]
    # the early day-1 run, the failed run and the first pruning run
    assert output.step_output_data.metadata["deleted_runs"].value == 3
    assert instance.get_run_ids(dg.RunsFilter(job_name="prune_dagster_runs_job")) == [result.run_id]
    assert instance.get_materialized_partitions(dg.AssetKey("logs")) == {
        "2025-01-01",
        "2025-01-02",
    }
    with connect(fresh_db_url) as conn:  # the data stays
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 4


def test_dg_check_defs_needs_no_running_database():
    """`uv run dg check defs` from the project folder validates the code location at once,
    whether or not a database runs (the project's dagster.yaml names no storage)."""
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[2]
    # a storage here would be what dg connects to (and retries for a while when it is down)
    assert "storage" not in yaml.safe_load((root / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRAY_", "DAGSTER_"))}
    env["XRAY_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/nothing"  # nothing listens
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_partitions_start_at_the_first_day_of_the_logs_recorded_once(tmp_path: Path):
    from xray_pipeline.core.runtime.supervisor import record_start_date

    path = tmp_path / "access.log"
    path.write_text(line(2, 0) + line(3, 0))
    (tmp_path / "access.log.1").write_text(line(1, 0))  # a rotated copy: older still
    overrides = {"general.home": str(tmp_path / "home"), "parser.logfile": [str(path)]}
    settings = load_settings(None, overrides, env={})
    assert record_start_date(settings, [str(path)]) == "2025-01-01"
    path.write_text("")  # the logs change: the recorded day stays
    assert record_start_date(settings, [str(path)]) == "2025-01-01"
    defs = build_definitions(settings)
    keys = defs.resolve_assets_def("logs").partitions_def.get_partition_keys()
    assert keys[0] == "2025-01-01"
    chosen = load_settings(None, {**overrides, "dagster.start_date": "2024-06-01"}, env={})
    assert record_start_date(chosen, [str(path)]) == "2024-06-01"  # the setting wins
    empty = load_settings(None, {"general.home": str(tmp_path / "new")}, env={})
    first = build_definitions(empty).resolve_assets_def("logs").partitions_def
    assert len(first.get_partition_keys()) <= 2  # nothing recorded: from today on


def test_one_run_loads_every_source_of_a_day(fresh_db_url: str, tmp_path: Path, instance):
    paths = [tmp_path / f"node{i}" / "access.log" for i in range(3)]
    for i, path in enumerate(paths):
        path.parent.mkdir()
        path.write_text(line(1, i, f"n{i}") + line(2, i, f"m{i}"))
    defs = make_defs(fresh_db_url, *paths)
    result = tick(defs, instance)
    assert [r.partition_key for r in result.run_requests] == ["2025-01-01", "2025-01-02"]
    assert [len(ranges(r)) for r in result.run_requests] == [3, 3]
    assert all(r.tags["xray/sources"] == "3" for r in result.run_requests)
    outputs = [materialize(defs, instance, r) for r in result.run_requests]
    metadata = logs_metadata(outputs[0])
    assert metadata["sources"].value == 3 and metadata["lines"].value == 3
    # the run judged its rows against the rules: a materialization of the day's `incidents`
    [judged] = [
        e.materialization
        for e in outputs[0].get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("incidents")
    ]
    assert judged.partition == "2025-01-01"
    assert judged.metadata["evaluated_rows"].value == 3  # the day's rows, all judged
    assert judged.metadata["rows_read"].value == 0  # nobody could break a rule: none read
    assert judged.metadata["open_incidents"].value == 0
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 6
    assert not tick(defs, instance, cursor=result.cursor).run_requests


def test_a_day_with_a_run_waiting_to_start_gets_no_new_run_until_it_starts(
    fresh_db_url: str, tmp_path: Path, instance
):
    """Adaptive batching: while a partition's run is queued, what arrives waits; the next
    run takes all of it in one go."""
    path = tmp_path / "access.log"
    path.write_text(line(1, 0))
    defs = make_defs(fresh_db_url, path)
    first = tick(defs, instance)
    [request] = first.run_requests
    queued = instance.create_run_for_job(
        job_def=defs.resolve_job_def("load_logs_job"),
        run_config=request.run_config,
        tags={**request.tags, "dagster/partition": request.partition_key},
        status=dg.DagsterRunStatus.NOT_STARTED,  # waiting in the queue, as far as it goes
    )
    for second in range(1, 4):  # three ticks while it waits
        with path.open("a") as fh:
            fh.write(line(1, second))
        waiting = tick(defs, instance, cursor=first.cursor)
        assert not waiting.run_requests
        assert json.loads(waiting.cursor) == json.loads(first.cursor)  # nothing marked sent
    instance.report_run_canceled(queued)  # it never started: its range is requested again
    assert materialize(defs, instance, request).success
    later = tick(defs, instance, cursor=waiting.cursor)
    [batch] = later.run_requests
    assert ranges(batch)[0]["start"] == len(line(1, 0))
    assert ranges(batch)[0]["end"] == path.stat().st_size  # the three lines in one run
    assert materialize(defs, instance, batch).success
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 4


def test_the_archive_off_leaves_no_archive_in_the_code_location(tmp_path: Path):
    defs = make_defs("postgresql://u@127.0.0.1:1/x", tmp_path / "access.log",
                     **{"archive.enabled": "false"})  # fmt: skip
    repo = defs.get_repository_def()
    assert "logs_archive" not in {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "archive_automation_sensor" not in {s.name for s in repo.sensor_defs}
