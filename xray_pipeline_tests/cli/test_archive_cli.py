"""`xray-pipeline archive` in a child process: write closed days (checked), list them, verify
them (exit 1 naming a damaged file), show a day's rows as `parse` would, refuse an open day."""

import csv
import datetime as dt
import io
import json
from pathlib import Path

import polars as pl
from conftest import run_cli

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log


def test_archive_write_list_verify_show(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=3_000, days=2, users=10), log)
    with connect(fresh_db_url) as conn:
        ingest_files(conn, [log], timezone="UTC", batch_size=1 << 20)
        user, rows = conn.execute(
            "SELECT u.email, count(*) FROM logs l JOIN users u ON u.id = l.user_id "
            "WHERE l.ts < '2025-11-18' GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchone()
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path / "home")}

    written = run_cli("archive", "write", "2025-11-17", "2025-11-18", env=env)
    assert written.returncode == 0, written.stderr
    assert written.stdout.count("checked") == 2
    listed = run_cli("archive", "list", env=env)
    assert "2025-11-17" in listed.stdout and "both" in listed.stdout
    assert run_cli("archive", "verify", env=env).stdout.count(": ok,") == 2

    shown = run_cli("archive", "show", "2025-11-17", "--user", user, "--limit", "100000",
                    "--format", "csv", env=env)  # fmt: skip
    records = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert len(records) == rows and {r["user"] for r in records} == {user}
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    first = json.loads(run_cli("archive", "show", "2025-11-17", "--limit", "1", env=env).stdout)
    assert first["ts"].startswith("2025-11-17T") and first["source"] == str(log)

    damaged = tmp_path / "home" / "archive" / "day=2025-11-18" / "logs-000.parquet"
    pl.read_parquet(damaged).head(10).write_parquet(damaged)
    verified = run_cli("archive", "verify", env=env)
    assert verified.returncode == 1
    assert "2025-11-18: FAILED" in verified.stdout and "logs-000.parquet changed" in verified.stdout
    assert "1 of 2 day(s) failed" in verified.stderr

    today = dt.datetime.now(dt.UTC).date().isoformat()
    refused = run_cli("archive", "write", today, env=env)
    assert refused.returncode == 2 and "is not over yet" in refused.stderr
    missing = run_cli("archive", "show", "2025-11-20", env=env)
    assert missing.returncode == 1 and "2025-11-20 is not archived" in missing.stderr
