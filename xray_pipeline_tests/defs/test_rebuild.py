"""Backfills of `logs`: a day rebuilt from the bytes on disk, rotated or gzipped, or kept."""

import gzip
import shutil
from pathlib import Path

import dagster as dg
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log
from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings

DAY1, DAY2 = "2025-11-17", "2025-11-18"
SNAPSHOT = (
    "SELECT ts, source_id, byte_offset, src_protocol_id, src_ip, src_host, src_port, "
    "status, dest_protocol_id, endpoint_id, dest_url, inbound_tag_id, outbound_tag_id, user_id, "
    "reason FROM logs WHERE ts::date = %s ORDER BY source_id, byte_offset"
)


def snapshot(url: str, day: str) -> tuple[list, list, list]:
    with connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        logs = conn.execute(SNAPSHOT, (day,)).fetchall()
        dns = conn.execute(
            "SELECT * FROM dns_queries WHERE ts::date = %s ORDER BY byte_offset", (day,)
        ).fetchall()
        rejects = conn.execute(
            "SELECT * FROM rejects WHERE ts::date = %s ORDER BY byte_offset", (day,)
        ).fetchall()
    return logs, dns, rejects


def backfill(url: str, log: Path, *days: str) -> dict:
    defs = build_definitions(
        load_settings(
            None,
            {
                "postgresql.url": url,
                "parser.logfile": [str(log)],
                "general.home": str(log.parent / "home"),
                "dagster.start_date": "2025-11-01",
            },
            env={},
        )
    )
    job = defs.resolve_job_def("load_logs_job")
    tags = {}
    key = days[0]
    if len(days) > 1:
        tags = {
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1],
        }
        key = None
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(partition_key=key, tags=tags, instance=instance)
    assert result.success
    events = result.get_asset_materialization_events()
    assert sorted(e.partition for e in events) == sorted(days)  # one event per day
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


@pytest.fixture
def ingested(fresh_db_url: str, tmp_path: Path) -> tuple[str, Path]:
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=4_000, days=2, other_share=0.4, users=40), log)
    with connect(fresh_db_url) as conn:
        # big chunks: one ledger range spans midnight
        ingest_files(conn, [log], timezone="UTC", batch_size=256 * 1024)
    return fresh_db_url, log


def test_backfilled_day_equals_the_loaded_day(ingested):
    url, log = ingested
    before1, before2 = snapshot(url, DAY1), snapshot(url, DAY2)
    assert before1[0] and before2[0]
    metadata = backfill(url, log, DAY2)
    assert metadata["complete"] is True and metadata["ranges_missing"] == 0
    assert metadata["ranges_reread"] >= 1
    assert metadata["rows_before"] == metadata["rows_after"]
    assert snapshot(url, DAY2) == before2
    assert snapshot(url, DAY1) == before1  # the range that spans midnight kept its other day


def test_day_rebuilt_from_a_gzipped_rotation(ingested):
    url, log = ingested
    before = snapshot(url, DAY1)
    archive = log.with_name("access.log.2.gz")
    with log.open("rb") as src, gzip.open(archive, "wb") as dst:
        shutil.copyfileobj(src, dst)
    log.unlink()
    metadata = backfill(url, log, DAY1)
    assert metadata["complete"] is True
    assert all("access.log.2.gz" in item for item in metadata["reread"])
    assert snapshot(url, DAY1) == before


def test_day_whose_bytes_are_gone_keeps_its_rows_and_says_so(ingested):
    url, log = ingested
    before = snapshot(url, DAY1)
    log.unlink()
    metadata = backfill(url, log, DAY1)
    assert metadata["complete"] is False
    assert metadata["ranges_missing"] >= 1 and metadata["ranges_reread"] == 0
    assert metadata["rows_after"] == metadata["rows_before"]
    assert snapshot(url, DAY1) == before


def test_backfill_of_several_days_in_one_run(ingested):
    url, log = ingested
    before = snapshot(url, DAY1), snapshot(url, DAY2)
    metadata = backfill(url, log, DAY1, DAY2)
    assert metadata["days"] == [DAY1, DAY2]
    assert (snapshot(url, DAY1), snapshot(url, DAY2)) == before


def test_ingest_reads_gz_archives_once(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "access.log.3.gz"
    plain = tmp_path / "old.log"
    write_log(GeneratorConfig(lines=1_500, days=1), plain)
    with plain.open("rb") as src, gzip.open(log, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with connect(fresh_db_url) as conn:
        first = ingest_files(conn, [log], timezone="UTC", batch_size=64 * 1024)
        assert first.lines == 1_500
        # the plain file with the same bytes is the same source: nothing loaded twice
        assert ingest_files(conn, [plain], timezone="UTC", batch_size=64 * 1024).lines == 0
        assert ingest_files(conn, [log], timezone="UTC", batch_size=64 * 1024).lines == 0
