"""What the Dagster UI shows of the code location (assets and their groups, partitions,
upstream assets, kinds and descriptions; checks; jobs; schedules; sensors), kept in a
snapshot file, so that a change to it is seen in review. After an intended change:
`XRAY_UPDATE_SNAPSHOTS=1 uv run pytest xray_pipeline_tests/defs/test_definitions_snapshot.py`,
then read the diff of the snapshot before committing it."""

import json
import os
from pathlib import Path

import dagster as dg

from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def describe(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        partitions = spec.partitions_def
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "partitions": type(partitions).__name__ if partitions else None,
            "upstream": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "kinds": sorted(spec.kinds),
            "description": spec.description,
        }
    checks = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        checks[key.to_user_string()] = graph.get_check_spec(key).description
    jobs = {
        job.name: job.description
        for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name)
        if not job.name.startswith("__")
    }
    repository = defs.get_repository_def()
    schedules = {
        s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name,
                 "description": s.description}
        for s in sorted(repository.schedule_defs, key=lambda s: s.name)
    }  # fmt: skip
    sensors = {
        s.name: {"interval_s": s.minimum_interval_seconds, "status": s.default_status.value,
                 "description": s.description}
        for s in sorted(repository.sensor_defs, key=lambda s: s.name)
    }  # fmt: skip
    return {"assets": assets, "checks": checks, "jobs": jobs, "schedules": schedules,
            "sensors": sensors}  # fmt: skip


def test_what_the_ui_shows_matches_the_snapshot(tmp_path: Path, monkeypatch):
    update = os.environ.get("XRAY_UPDATE_SNAPSHOTS") == "1"
    monkeypatch.setenv("XRAY_HOME", str(tmp_path))
    for name in [v for v in os.environ if v.startswith("XRAY_") and v != "XRAY_HOME"]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no config.ini: the defaults
    current = describe(build_definitions(load_settings()))
    text = json.dumps(current, indent=2, sort_keys=True) + "\n"
    if update:
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.exists(), "no snapshot yet: run with XRAY_UPDATE_SNAPSHOTS=1"
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert current == expected, (
        "the definitions changed: if that is intended, run with XRAY_UPDATE_SNAPSHOTS=1 and "
        "review the snapshot's diff"
    )
