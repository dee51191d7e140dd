"""The archive on a real PostgreSQL and real files: a closed day written to Parquet equals the
day in the database, the check finds a tampered, missing or disagreeing file, and erasure
rewrites the files (counting in the ledger once the day is gone from PostgreSQL)."""

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from xray_pipeline.core.archive.erase import erase_rows
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import LOGS, TABLES
from xray_pipeline.core.archive.verify import verify_day
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

DAY = dt.date(2025, 11, 17)


@pytest.fixture
def loaded(fresh_db_url: str, tmp_path: Path) -> tuple[str, ArchiveStore]:
    path = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=8_000, days=2, other_share=0.3, users=20), path)
    with connect(fresh_db_url) as conn:
        ingest_files(conn, [path], timezone="UTC", batch_size=128 * 1024)
    return fresh_db_url, ArchiveStore(str(tmp_path / "archive"))


def counts(conn, day: dt.date) -> dict[str, int]:
    bounds = "ts >= %(d)s::timestamptz AND ts < %(d)s::timestamptz + interval '1 day'"
    return {
        t.name: conn.execute(
            f"SELECT count(*) FROM {t.name} WHERE {bounds}", {"d": day}
        ).fetchone()[0]
        for t in TABLES
    }


def test_a_day_is_written_as_parquet_equal_to_the_database(loaded):
    url, store = loaded
    with connect(url) as conn:
        written = archive_day(conn, store, DAY, "UTC", part_bytes=256 * 1024)
        expected = counts(conn, DAY)
        check = verify_day(conn, store, DAY, "UTC")
        recorded = conn.execute(
            "SELECT rows, verified_at IS NOT NULL, problem FROM archive_days WHERE day = %s",
            (DAY,),
        ).fetchone()
        users = conn.execute(
            "SELECT u.email, count(*) FROM logs l LEFT JOIN users u ON u.id = l.user_id "
            "WHERE l.ts >= %s AND l.ts < %s GROUP BY 1",
            (DAY, DAY + dt.timedelta(days=1)),
        ).fetchall()
    assert all(n > 0 for n in expected.values())
    assert {t.name: written.rows(t.name) for t in TABLES} == expected
    assert len([f for f in written.files if f.table == "logs"]) > 1  # parts of bounded size
    assert check.ok, check.problems
    assert check.rows == check.database_rows == expected
    assert recorded == (sum(expected.values()), True, None)
    folder = Path(store.root) / "day=2025-11-17"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (
        manifest["schema_version"] == 1 and manifest["tables"]["logs"]["rows"] == expected["logs"]
    )
    # the files stand alone: names resolved, hive-style day folders
    logs = pl.scan_parquet(f"{store.root}/day=*/logs-*.parquet", hive_partitioning=True).collect()
    assert logs["day"].unique().to_list() == [DAY]
    assert dict(logs.group_by("user").len().iter_rows()) == dict(users)
    assert logs.schema["ts"] == pl.Datetime("us", "UTC")
    assert logs["node"].null_count() == logs.height or logs["source"].null_count() == 0


def test_archiving_again_replaces_the_day_and_its_extra_parts(loaded):
    url, store = loaded
    with connect(url) as conn:
        first = archive_day(conn, store, DAY, "UTC", part_bytes=128 * 1024)
        second = archive_day(conn, store, DAY, "UTC")
        assert verify_day(conn, store, DAY, "UTC").ok
    assert len(first.files) > len(second.files) == 3
    on_disk = sorted(p.name for p in (Path(store.root) / "day=2025-11-17").glob("*.parquet"))
    assert on_disk == sorted(Path(f.path).name for f in second.files)


@pytest.mark.parametrize("fault", ["tampered", "missing", "row_deleted", "row_changed", "manifest"])
def test_the_check_fails_on_a_damaged_or_disagreeing_archive(loaded, fault):
    url, store = loaded
    with connect(url) as conn:
        written = archive_day(conn, store, DAY, "UTC")
        path = Path(store.uri(next(f.path for f in written.files if f.table == "logs")))
        if fault == "tampered":
            frame = pl.read_parquet(path)
            frame.with_columns(pl.col("dest_port") + 1).write_parquet(path, compression="zstd")
        elif fault == "missing":
            path.unlink()
        elif fault == "manifest":
            (path.parent / "manifest.json").write_text("{not json")
        elif fault == "row_deleted":
            conn.execute(
                "DELETE FROM logs WHERE ctid = (SELECT ctid FROM logs WHERE ts >= %s LIMIT 1)",
                (DAY,),
            )
            conn.commit()
        else:
            conn.execute(
                "UPDATE logs SET src_port = src_port + 1 "
                "WHERE ctid = (SELECT ctid FROM logs WHERE ts >= %s AND src_port > 0 LIMIT 1)",
                (DAY,),
            )
            conn.commit()
        check = verify_day(conn, store, DAY, "UTC")
        problem, verified = conn.execute(
            "SELECT problem, verified_at FROM archive_days WHERE day = %s", (DAY,)
        ).fetchone()
    assert not check.ok and verified is None
    expected = {
        "tampered": "changed: its SHA-256 is not the manifest's",
        "missing": "is missing",
        "manifest": "is not a manifest",
        "row_deleted": "rows archived",
        "row_changed": "differ from PostgreSQL's",
    }[fault]
    assert expected in problem


def test_erasing_a_user_rewrites_the_files_and_a_cold_day_counts_in_the_ledger(loaded):
    url, store = loaded
    second_day = DAY + dt.timedelta(days=1)
    with connect(url) as conn:
        archive_day(conn, store, DAY, "UTC")
        archive_day(conn, store, second_day, "UTC")
        user = conn.execute(
            "SELECT u.email FROM logs l JOIN users u ON u.id = l.user_id "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        # the first day leaves PostgreSQL (as the maintenance drops a verified day)
        conn.execute("DROP TABLE logs_2025_11_17")
        conn.commit()
        keep = lambda t: (pl.col("user") != user) if t is LOGS else None  # noqa: E731
        cold = erase_rows(conn, store, keep, [DAY])
        erased_cold = conn.execute("SELECT sum(erased) FROM ingest_ledger").fetchone()[0]
        hot = erase_rows(conn, store, keep, [second_day])
        erased_both = conn.execute("SELECT sum(erased) FROM ingest_ledger").fetchone()[0]
        again = erase_rows(conn, store, keep)
        first = verify_day(conn, store, DAY, "UTC")
        second = verify_day(conn, store, second_day, "UTC")
    logs = pl.scan_parquet(f"{store.root}/day=*/logs-*.parquet").collect()
    assert cold.rows["logs"] > 0 and hot.rows["logs"] > 0
    assert logs.filter(pl.col("user") == user).is_empty()
    assert (cold.days, hot.days) == ([DAY], [second_day])
    assert again.rows == {"logs": 0, "dns_queries": 0, "rejects": 0} and again.days == []
    # a day gone from PostgreSQL counts its erased lines in the ledger; a hot day's rows are
    # still in PostgreSQL (forget deletes them there and counts them then)
    assert erased_cold == erased_both == cold.rows["logs"]
    assert first.ok and first.database_rows is None
    assert (
        first.rows["logs"]
        == logs.filter(pl.col("ts") < pl.datetime(2025, 11, 18, time_zone="UTC")).height
    )
    assert not second.ok and "rows archived" in second.problems[0]
