"""[retention] raw_days in the daily maintenance: spool segments never replayed go with the raw
rows of their age; `days`, its former name, still works."""

import time
from pathlib import Path

from xray_pipeline.core.ingest import offline as spool
from xray_pipeline.core.ingest.offline import segments, write_segment
from xray_pipeline.core.parse import parse_chunk
from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings

LINE = b"2024/05/01 10:00:00 from 192.0.2.7:1 accepted tcp:a.example:443 [in >> out] email: a\n"


def test_maintenance_removes_spool_segments_older_than_raw_days(
    fresh_db_url: str, tmp_path: Path, instance, monkeypatch
):
    home = tmp_path / "home"
    settings = load_settings(
        None,
        {"postgresql.url": fresh_db_url, "general.home": str(home), "retention.raw_days": "7",
         "dagster.start_date": "2024-05-01"},
        env={},
    )  # fmt: skip
    folder = settings.spool_dir
    chunk = parse_chunk(LINE)
    now = time.time()
    monkeypatch.setattr(spool.time, "time", lambda: now - 10 * 86400)
    write_segment(folder, chunk, identity="old", source_path="/a.log", node=None, timezone="UTC")
    monkeypatch.setattr(spool.time, "time", lambda: now)
    write_segment(folder, chunk, identity="new", source_path="/b.log", node=None, timezone="UTC")
    result = (
        build_definitions(settings)
        .resolve_job_def("partition_maintenance_job")
        .execute_in_process(instance=instance)
    )
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["spool_segments_removed"].value == 1
    assert [s.identity for s in segments(folder)] == ["new"]


def test_days_is_the_former_name_of_raw_days():
    assert load_settings(None, {"retention.days": "9"}, env={}).raw_days == 9
    both = load_settings(None, {"retention.days": "9", "retention.raw_days": "5"}, env={})
    assert both.raw_days == 5
