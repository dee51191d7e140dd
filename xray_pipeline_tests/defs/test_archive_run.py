"""The archive in the running pipeline: logs_archive writes a closed day (several in one run)
and checks it, refuses a day not over; the maintenance moves the days past [retention]
hot_days out of PostgreSQL once their archive checks out, keeps a tampered one with a failed
check, and the API answers the same over the days that left as it did before."""

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from fastapi.testclient import TestClient

from xray_pipeline.api.main import create_app
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tiering import leave_postgres
from xray_pipeline.core.archive.verify import verify_day
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log
from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings

DAYS = ("2025-11-17", "2025-11-18")


@pytest.fixture
def loaded(fresh_db_url: str, tmp_path: Path):
    path = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=6_000, days=2, other_share=0.3, users=20), path)
    with connect(fresh_db_url) as conn:
        ingest_files(conn, [path], timezone="UTC", batch_size=128 * 1024, node="edge-1")
        for day in DAYS:
            for table in ROLLUPS:
                rebuild_rollup(conn, table, dt.date.fromisoformat(day), "UTC")
    settings = load_settings(
        None,
        {"postgresql.url": fresh_db_url, "general.home": str(tmp_path / "home"),
         "dagster.start_date": "2025-11-01", "retention.hot_days": "5"},
        env={},
    )  # fmt: skip
    return fresh_db_url, settings, build_definitions(settings)


def archive_days(
    defs: dg.Definitions, instance, first: str, last: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [defs.resolve_assets_def("logs_archive")],
        instance=instance,
        tags={"dagster/asset_partition_range_start": first,
              "dagster/asset_partition_range_end": last},
        raise_on_error=False,
    )  # fmt: skip


def test_closed_days_archive_in_one_run_with_their_check_and_today_is_refused(loaded, instance):
    url, settings, defs = loaded
    result = archive_days(defs, instance, *DAYS)
    assert result.success
    materialized, *others = result.asset_materializations_for_node("logs_archive")
    assert sorted(m.partition for m in [materialized, *others]) == list(DAYS)
    with connect(url) as conn:
        rows = sum(
            conn.execute(f"SELECT count(*) FROM {t} WHERE ts >= '2025-11-17'").fetchone()[0]
            for t in ("logs", "dns_queries", "rejects")
        )
        recorded = conn.execute("SELECT day FROM archive_days ORDER BY day").fetchall()
    assert materialized.metadata["days"].value == 2
    assert materialized.metadata["dagster/row_count"].value == rows
    assert 0 < materialized.metadata["bytes_per_row"].value < 60
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "logs_archive_matches_logs"
    assert [r[0].isoformat() for r in recorded] == list(DAYS)
    assert (Path(settings.archive_root) / "day=2025-11-18" / "manifest.json").is_file()

    today = dt.datetime.now(dt.UTC).date().isoformat()
    refused = archive_days(defs, instance, today, today)
    assert not refused.success
    failure = refused.get_step_failure_events()[0].event_specific_data.error.message
    assert "is not over yet" in failure and "choose days before" in failure


QUERIES = [
    {"limit": 50},
    {"limit": 20, "status": "rejected"},
    {"limit": 20, "search": "example"},
    {"limit": 20, "protocol": "udp"},
    {"limit": 30, "offset": 40},
    {"limit": 25, "node": "edge-1", "from": "2025-11-17T06:00:00Z", "to": "2025-11-17T18:00:00Z"},
]


def answers(client: TestClient, user: str) -> list:
    got = [client.get("/api/logs", params=q).json() for q in QUERIES]
    cursor, pages = None, []
    for _ in range(3):  # a user's page, newest first, then on by cursor
        params = {"user": user, "limit": 15, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/logs", params=params).json()
        pages.append(page)
        cursor = page["next_cursor"]
    # the stats and series of whole days come from the rollups, which stay
    whole = {"from": "2025-11-17T00:00:00Z", "to": "2025-11-19T00:00:00Z"}
    summed = [
        client.get(path, params=params).json()
        for path, params in [
            ("/api/logs/stats", {}), ("/api/logs/stats", whole),
            ("/api/timeseries", {"bucket": "day"}), ("/api/timeseries", {**whole, "bucket": "hour"}),
            ("/api/users", {}), (f"/api/users/{user}", whole),
        ]
    ]  # fmt: skip
    return got + pages + summed


def test_a_day_leaves_postgresql_when_archived_and_the_api_answers_the_same(
    loaded, instance, tmp_path
):
    url, settings, defs = loaded
    with connect(url) as conn:
        user = conn.execute(
            "SELECT u.email FROM logs l JOIN users u ON u.id = l.user_id "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
    store = ArchiveStore(settings.archive_root)
    with TestClient(create_app(url, archive=store)) as client:
        before = answers(client, user)
    assert archive_days(defs, instance, *DAYS).success
    # the second day's file is damaged: that day stays in PostgreSQL, with a failed check
    damaged = Path(store.uri("day=2025-11-18/logs-000.parquet"))
    frame = pl.read_parquet(damaged)
    frame.head(frame.height - 1).write_parquet(damaged)
    result = defs.resolve_job_def("partition_maintenance_job").execute_in_process(
        run_config={"ops": {"maintain_partitions": {"config": {"today": "2025-11-30"}}}},
        instance=instance,
    )
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["days_archived_and_dropped"].value == ["2025-11-17"]
    assert "changed: its SHA-256" in metadata["days_kept_hot"].value["2025-11-18"]
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "2025-11-18" in check.metadata["problems"].value
    with connect(url) as conn:
        hot = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'logs_2025_11_1%'"
        )}  # fmt: skip
        dns_left = conn.execute(
            "SELECT count(*) FROM dns_queries WHERE ts < '2025-11-18'"
        ).fetchone()[0]
    assert hot == {"logs_2025_11_18"} and dns_left == 0
    with TestClient(create_app(url, archive=store)) as client:
        after = answers(client, user)
    assert [len(a.get("items", ())) for a in after] == [len(b.get("items", ())) for b in before]
    for got, expected in zip(after, before, strict=True):
        assert got == expected
    assert any(i["ts"] < "2025-11-18" for a in after for i in a["items"])


DAY_ROWS = """
SELECT l.ts, l.source_id, l.byte_offset, host(l.src_ip), l.src_host, l.src_port, l.status,
       e.host, e.port, l.dest_url, ti.name, tout.name, u.email, l.reason
FROM logs l LEFT JOIN endpoints e ON e.id = l.endpoint_id LEFT JOIN users u ON u.id = l.user_id
LEFT JOIN tags ti ON ti.id = l.inbound_tag_id LEFT JOIN tags tout ON tout.id = l.outbound_tag_id
WHERE l.ts >= '2025-11-17' AND l.ts < '2025-11-18' ORDER BY l.source_id, l.byte_offset
"""


def day_one(url: str) -> tuple[list, list, list]:
    with connect(url) as conn:
        return (
            conn.execute(DAY_ROWS).fetchall(),
            conn.execute(
                "SELECT * FROM dns_queries WHERE ts >= '2025-11-17' AND ts < '2025-11-18' "
                "ORDER BY source_id, byte_offset"
            ).fetchall(),
            conn.execute(
                "SELECT * FROM rejects WHERE ts >= '2025-11-17' AND ts < '2025-11-18' "
                "ORDER BY source_id, byte_offset"
            ).fetchall(),
        )


def test_a_backfill_of_a_day_only_in_the_archive_restores_it_or_rereads_its_bytes(loaded, instance):
    url, settings, defs = loaded
    store = ArchiveStore(settings.archive_root)
    before = day_one(url)
    assert all(before)
    assert archive_days(defs, instance, *DAYS).success
    job = defs.resolve_job_def("load_logs_job")
    for source in ("archive", "bytes"):
        with connect(url) as conn:
            tiers = leave_postgres(
                conn, store, today=dt.date(2025, 11, 30), hot_days=12, timezone="UTC"
            )
        assert tiers.dropped == [dt.date(2025, 11, 17)] and day_one(url) == ([], [], [])
        result = job.execute_in_process(
            partition_key=DAYS[0],
            run_config={"ops": {"logs": {"config": {"rebuild_from": source}}}},
            instance=instance,
        )
        assert result.success
        [event] = result.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        assert day_one(url) == before, source
        assert metadata["dagster/row_count"] == sum(map(len, before))
        assert (metadata["ranges_reread"] > 0) == (source == "bytes")
        with connect(url) as conn:
            assert verify_day(conn, store, dt.date(2025, 11, 17), "UTC").ok


def test_a_backfill_from_the_archive_of_a_day_never_archived_says_so(loaded, instance):
    _, _, defs = loaded
    result = defs.resolve_job_def("load_logs_job").execute_in_process(
        partition_key=DAYS[0],
        run_config={"ops": {"logs": {"config": {"rebuild_from": "archive"}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "2025-11-17 is not in the archive" in failure and "from bytes instead" in failure
