"""Landed ranges of the fleet's nodes flow through the pipeline as local files do: the sensor
plans them, `logs` loads them exactly once, and every row carries its node."""

import datetime as dt
import os
from pathlib import Path

import dagster as dg

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.rollups import rebuild_rollup
from xray_pipeline.core.fleet.landing import land, landed_files, record_contact
from xray_pipeline.core.fleet.nodes import add_node
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings


def line(node: int, second: int) -> bytes:
    return (
        f"2025/01/01 12:00:{second:02d}.000001 from 198.51.100.{node}:1 accepted "
        f"tcp:a.example:443 [in >> out] email: n{node}u{second}\n"
    ).encode()


def test_each_nodes_landed_lines_load_once_under_its_node(
    fresh_db_url: str, tmp_path: Path, instance
):
    home = tmp_path / "home"
    landed = home / "landed"
    for node in (1, 2):
        land(landed, f"n{node}", "64:7:abc", "/var/log/xray/access.log", 0, line(node, 0))
    settings = load_settings(
        None,
        {
            "postgresql.url": fresh_db_url,
            "general.home": str(home),
            "dagster.start_date": "2024-12-01",
        },
        env={},
    )
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("access_log_sensor")

    def tick(cursor=None):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=defs.resources
        )
        return sensor(context)

    first = tick()
    [request] = first.run_requests  # one run of the day, both nodes' sources
    assert request.tags["xray/nodes"] == "n1, n2"
    assert sorted(r["node"] for r in request.run_config["ops"]["logs"]["config"]["ranges"]) == [
        "n1",
        "n2",
    ]
    job = defs.resolve_job_def("load_logs_job")
    assert job.execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key, instance=instance
    ).success
    land(landed, "n1", "64:7:abc", "", len(line(1, 0)), line(1, 1))
    [later] = tick(first.cursor).run_requests
    assert job.execute_in_process(
        run_config=later.run_config, partition_key=later.partition_key, instance=instance
    ).success
    with connect(fresh_db_url) as conn:
        rows = conn.execute(
            "SELECT s.node, count(*) FROM logs l JOIN sources s ON s.id = l.source_id "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("n1", 2), ("n2", 1)]


def test_daily_node_users_counts_each_nodes_users(fresh_db_url: str, tmp_path: Path):
    landed = tmp_path / "landed"
    data = {1: b"".join(line(1, s) for s in range(3)), 2: line(2, 0) + line(2, 0)}
    for node, body in data.items():
        land(landed, f"n{node}", "64:7:abc", "/var/log/xray/access.log", 0, body)
    with connect(fresh_db_url) as conn:
        for path, node in landed_files(landed):
            ingest_files(conn, [path], timezone="UTC", batch_size=64 * 1024, node=node)
        rebuild_rollup(conn, "daily_node_users", dt.date(2025, 1, 1), "UTC")
        got = conn.execute(
            "SELECT d.node, u.email, d.connections, d.rejected FROM daily_node_users d "
            "JOIN users u ON u.id = d.user_id ORDER BY 1, 2"
        ).fetchall()
    assert got == [
        ("n1", "n1u0", 1, 0),
        ("n1", "n1u1", 1, 0),
        ("n1", "n1u2", 1, 0),
        ("n2", "n2u0", 2, 0),
    ]


def test_node_silence_check_warns_for_the_nodes_not_heard_from(
    fresh_db_url: str, tmp_path: Path, instance
):
    home = tmp_path / "home"
    landed = home / "landed"
    with connect(fresh_db_url) as conn:
        for name in ("calls", "quiet", "new"):
            add_node(conn, name)
        conn.execute("UPDATE nodes SET created_at = now() - interval '2 hours' WHERE name <> 'new'")
        conn.commit()
    record_contact(landed, "calls", "xray-pipeline-ship/test")
    settings = load_settings(
        None,
        {
            "postgresql.url": fresh_db_url,
            "general.home": str(home),
            "dagster.start_date": "2024-12-01",
            "checks.node_silence_minutes": "30",
        },
        env={},
    )
    defs = build_definitions(settings)
    result = defs.resolve_job_def("check_logs_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    [silence] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "logs_node_silence"
    ]
    assert not silence.passed and silence.severity == dg.AssetCheckSeverity.WARN
    silent = silence.metadata["silent"].value
    assert list(silent) == ["quiet"] and 119 < silent["quiet"] < 125
    assert silence.description == "1 of 3 nodes silent: quiet"


def test_maintenance_removes_landed_segments_once_loaded_and_old(
    fresh_db_url: str, tmp_path: Path, instance
):
    home = tmp_path / "home"
    landed = home / "landed"
    body = [line(1, s) for s in range(6)]
    offset = 0
    for piece in body:
        offset = land(landed, "n1", "64:7:abc", "/a.log", offset, piece, segment_bytes=1)
    land(landed, "n2", "64:8:def", "/a.log", 0, line(2, 0) + line(2, 1), segment_bytes=1)
    files = landed_files(landed)
    assert len(files) == 7  # a segment per range
    with connect(fresh_db_url) as conn:
        for path, node in files:
            if node == "n1":  # n2's are landed, not loaded yet
                ingest_files(conn, [path], timezone="UTC", batch_size=64 * 1024, node=node)
    long_ago = dt.datetime.now().timestamp() - 3 * 86400
    for path, _ in files:
        os.utime(path, (long_ago, long_ago))
    settings = load_settings(
        None,
        {
            "postgresql.url": fresh_db_url,
            "general.home": str(home),
            "dagster.start_date": "2024-12-01",
            "retention.landed_days": "2",
        },
        env={},
    )
    result = (
        build_definitions(settings)
        .resolve_job_def("partition_maintenance_job")
        .execute_in_process(instance=instance)
    )
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["landed_segments_removed"].value == 5  # n1's but its newest
    assert metadata["landed_bytes_removed"].value == sum(len(b) for b in body[:5])
    left = landed_files(landed)
    assert sorted(node for _, node in left) == ["n1", "n2"]  # n2 not loaded: kept
    with connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 6  # rows stay
    # n1 goes on where it was
    assert land(landed, "n1", "64:7:abc", "/a.log", offset, line(1, 7)) == offset + len(line(1, 7))


def test_a_backfill_tagged_with_a_node_rebuilds_that_nodes_day_only(
    fresh_db_url: str, tmp_path: Path, instance
):
    home = tmp_path / "home"
    landed = home / "landed"
    for node in (1, 2):
        body = b"".join(line(node, s) for s in range(4))
        land(landed, f"n{node}", "64:7:abc", "/var/log/xray/access.log", 0, body)
    with connect(fresh_db_url) as conn:
        for path, node in landed_files(landed):
            ingest_files(conn, [path], timezone="UTC", batch_size=64 * 1024, node=node)
        conn.execute("UPDATE logs SET src_port = 9")  # damage both nodes' rows
        conn.commit()
    settings = load_settings(
        None,
        {
            "postgresql.url": fresh_db_url,
            "general.home": str(home),
            "parser.timezone": "UTC",
            "dagster.start_date": "2024-12-01",
        },
        env={},
    )
    job = build_definitions(settings).resolve_job_def("load_logs_job")
    result = job.execute_in_process(
        partition_key="2025-01-01", tags={"xray/node": "n1"}, instance=instance
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["node"].value == "n1" and metadata["ranges_reread"].value == 1
    with connect(fresh_db_url) as conn:
        ports = conn.execute(
            "SELECT s.node, l.src_port, count(*) FROM logs l JOIN sources s "
            "ON s.id = l.source_id GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert ports == [("n1", 1, 4), ("n2", 9, 4)]


def test_landed_segments_go_once_loaded_and_their_day_archived(
    fresh_db_url: str, tmp_path: Path, instance
):
    home = tmp_path / "home"
    landed = home / "landed"
    offset = 0
    for piece in [line(1, s) for s in range(6)]:
        offset = land(landed, "n1", "64:7:abc", "/a.log", offset, piece, segment_bytes=1)
    with connect(fresh_db_url) as conn:
        for path, node in landed_files(landed):
            ingest_files(conn, [path], timezone="UTC", batch_size=64 * 1024, node=node)
    yesterday = dt.datetime.now().timestamp() - 86400
    for path, _ in landed_files(landed):
        os.utime(path, (yesterday, yesterday))
    settings = load_settings(
        None,
        {"postgresql.url": fresh_db_url, "general.home": str(home),
         "dagster.start_date": "2024-12-01"},
        env={},
    )  # fmt: skip
    job = build_definitions(settings).resolve_job_def("partition_maintenance_job")

    def removed() -> int:
        result = job.execute_in_process(instance=instance)
        [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        return output.event_specific_data.metadata["landed_segments_removed"].value

    assert removed() == 0  # loaded, a day old, [retention] landed_days 30: kept
    with connect(fresh_db_url) as conn:
        archive_day(conn, ArchiveStore(settings.archive_root), dt.date(2025, 1, 1), "UTC")
    assert removed() == 5  # archived too: all but each source's newest segment go
    assert len(landed_files(landed)) == 1
