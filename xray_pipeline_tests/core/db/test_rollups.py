"""Rollups, partition maintenance and data-quality checks on a real PostgreSQL."""

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.maintenance import maintain
from xray_pipeline.core.db.partitions import (
    QUICK_SAMPLE_TARGET,
    analyze_between,
    ensure_partitions,
    list_partitions,
)
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log
from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings

DAY1, DAY2 = "2025-11-17", "2025-11-18"


@pytest.fixture
def loaded_db(fresh_db_url: str, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=6_000, days=2, other_share=0.4, users=30), path)
    with connect(fresh_db_url) as conn:
        ingest_files(conn, [path], timezone="UTC", batch_size=128 * 1024)
    return fresh_db_url, path


def make_defs(db_url: str, *logfiles: Path, **extra) -> dg.Definitions:
    overrides = {
        "postgresql.url": db_url,
        "parser.logfile": [str(p) for p in logfiles],
        "dagster.start_date": "2025-11-01",
        **extra,
    }
    if logfiles:  # the state folder beside the logs, not the project's (a demo's landed files)
        overrides.setdefault("general.home", str(Path(logfiles[0]).parent / "home"))
    return build_definitions(load_settings(None, overrides, env={}))


def check_results(defs: dg.Definitions, day: str) -> dict[str, dg.AssetCheckEvaluation]:
    """The logs checks for `day`, and the rollup checks of that day's rollup runs."""
    day_config = {"config": {"day": day}}
    with dg.instance_for_test() as instance:
        checks = defs.resolve_job_def("check_logs_job").execute_in_process(
            run_config={
                "ops": {"logs_logs_reconciliation": day_config, "logs_logs_reject_rate": day_config}
            },
            instance=instance,
            raise_on_error=False,
        )
        rollups = dg.materialize(
            [defs.resolve_assets_def(k) for k in ("logs", *ROLLUPS)],
            selection=list(ROLLUPS),
            partition_key=day,
            instance=instance,
        )
        evaluations = [
            *checks.get_asset_check_evaluations(),
            *rollups.get_asset_check_evaluations(),
        ]
        return {e.check_name: e for e in evaluations}


def test_rollups_match_ground_truth(loaded_db):
    url, _ = loaded_db
    with connect(url) as conn:
        for day in (DAY1, DAY2):
            for table in ROLLUPS:
                rebuild_rollup(conn, table, dt.date.fromisoformat(day), "UTC")
        # ground truth computed another way: from the rows, in Polars
        rows = conn.execute(
            "SELECT ts::date, user_id, dest_protocol_id, inbound_tag_id, outbound_tag_id, status, "
            "endpoint_id, coalesce(host(src_ip), src_host), ts FROM logs"
        ).fetchall()
        hourly = conn.execute(
            "SELECT day, hour, protocol_id, inbound_tag_id, outbound_tag_id, connections, "
            "rejected FROM hourly_traffic"
        ).fetchall()
        totals = conn.execute(
            "SELECT day, protocol_id, inbound_tag_id, outbound_tag_id, connections, rejected "
            "FROM daily_totals"
        ).fetchall()
        traffic = conn.execute(
            "SELECT day, user_id, protocol_id, inbound_tag_id, outbound_tag_id, connections, "
            "rejected, distinct_destinations, distinct_source_ips FROM daily_traffic"
        ).fetchall()
        ips = conn.execute(
            "SELECT day, user_id, source, connections FROM daily_user_ips"
        ).fetchall()
    frame = pl.DataFrame(
        rows,
        orient="row",
        schema=["day", "user", "proto", "inb", "outb", "status", "endpoint", "src", "ts"],
    )
    keys = ["day", "user", "proto", "inb", "outb"]
    expected = frame.group_by(keys).agg(
        pl.len().alias("connections"),
        (pl.col("status") == "rejected").sum().alias("rejected"),
        pl.col("endpoint").drop_nulls().n_unique().alias("dests"),
        pl.col("src").drop_nulls().n_unique().alias("srcs"),
    )
    got = pl.DataFrame(
        traffic, orient="row", schema=[*keys, "connections", "rejected", "dests", "srcs"]
    )
    cast = {"connections": pl.Int64, "rejected": pl.Int64, "dests": pl.Int64, "srcs": pl.Int64}
    assert (
        got.cast(cast)
        .sort(keys, nulls_last=True)
        .equals(expected.cast(cast).sort(keys, nulls_last=True))
    )
    assert got["connections"].sum() == frame.height
    ip_expected = (
        frame.group_by("day", "user", pl.col("src").fill_null("")).len().cast({"len": pl.Int64})
    )
    ip_got = pl.DataFrame(ips, orient="row", schema=["day", "user", "src", "len"]).cast(
        {"len": pl.Int64}
    )
    ip_keys = ["day", "user", "src"]
    assert ip_got.sort(ip_keys, nulls_last=True).equals(ip_expected.sort(ip_keys, nulls_last=True))
    hour_keys = ["day", "hour", "proto", "inb", "outb"]
    hour_expected = (
        frame.with_columns(pl.col("ts").dt.truncate("1h").alias("hour"))
        .group_by(hour_keys)
        .agg(
            pl.len().alias("connections"),
            (pl.col("status") == "rejected").sum().alias("rejected"),
        )
        .cast({"connections": pl.Int64, "rejected": pl.Int64})
    )
    hour_got = pl.DataFrame(
        hourly, orient="row", schema=[*hour_keys, "connections", "rejected"]
    ).cast({"connections": pl.Int64, "rejected": pl.Int64})
    assert hour_got.height < frame.height
    assert hour_got.sort(hour_keys, nulls_last=True).equals(
        hour_expected.select(hour_got.columns).sort(hour_keys, nulls_last=True)
    )
    total_keys = ["day", "proto", "inb", "outb"]
    total_expected = (
        hour_expected.group_by(total_keys)
        .agg(pl.col("connections").sum(), pl.col("rejected").sum())
        .sort(total_keys, nulls_last=True)
    )
    total_got = pl.DataFrame(
        totals, orient="row", schema=[*total_keys, "connections", "rejected"]
    ).cast({"connections": pl.Int64, "rejected": pl.Int64})
    assert total_got.sort(total_keys, nulls_last=True).equals(total_expected)


def test_rollup_assets_materialize_with_metadata(loaded_db):
    url, path = loaded_db
    defs = make_defs(url, path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [defs.resolve_assets_def(k) for k in ("logs", *ROLLUPS)],
            selection=list(ROLLUPS),
            partition_key=DAY1,
            instance=instance,
        )
    assert result.success
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert metadata["daily_traffic"]["logs_rows"].value > 0
    assert metadata["daily_user_ips"]["dagster/row_count"].value > 0


def test_checks_pass_on_good_data_and_fail_on_broken_data(loaded_db):
    url, path = loaded_db
    defs = make_defs(url, path)
    with connect(url) as conn:
        for table in ("daily_traffic", "daily_user_ips"):
            rebuild_rollup(conn, table, dt.date.fromisoformat(DAY1), "UTC")
    hour_ago = dt.datetime.now().timestamp() - 3600
    os.utime(path, (hour_ago, hour_ago))  # the log is not being written: nothing to be fresh
    good = check_results(defs, DAY1)
    assert set(good) == {
        "logs_reconciliation",
        "logs_ledger_contiguity",
        "logs_reject_rate",
        "logs_freshness",
        "logs_node_silence",
        "daily_traffic_matches_logs",
        "daily_user_ips_matches_logs",
        "daily_user_destinations_matches_logs",
        "daily_user_activity_matches_logs",
        "hourly_traffic_matches_logs",
        "daily_totals_matches_logs",
        "daily_node_users_matches_logs",
        "daily_places_matches_logs",
        "incidents_consistent",
        "incidents_alerts_delivered",
    }
    assert all(e.passed for e in good.values()), {k: e.metadata for k, e in good.items()}

    with connect(url) as conn:
        conn.execute("DELETE FROM logs WHERE ctid IN (SELECT ctid FROM logs_2025_11_17 LIMIT 3)")
        conn.execute(
            "INSERT INTO ingest_ledger (source_id, start_offset, end_offset, lines) "
            "SELECT source_id, max(end_offset) + 100, max(end_offset) + 200, 1 "
            "FROM ingest_ledger GROUP BY source_id"
        )
        conn.execute(
            "UPDATE daily_user_ips SET connections = connections + 1 WHERE day = %s", (DAY1,)
        )
        conn.commit()
    os.utime(path, None)  # the log is being written, but the newest row is days old
    bad = check_results(make_defs(url, path, **{"checks.reject_rate": "0.0001"}), DAY1)
    assert not bad["logs_reconciliation"].passed
    assert not bad["logs_ledger_contiguity"].passed
    assert bad["logs_ledger_contiguity"].severity == dg.AssetCheckSeverity.WARN
    assert not bad["logs_reject_rate"].passed
    assert not bad["logs_freshness"].passed
    # the rollups are rebuilt from the rows that are there: they match again
    assert bad["daily_traffic_matches_logs"].passed
    assert bad["daily_user_ips_matches_logs"].passed
    assert bad["daily_user_destinations_matches_logs"].passed
    assert bad["daily_user_activity_matches_logs"].passed
    assert bad["hourly_traffic_matches_logs"].passed
    assert bad["daily_totals_matches_logs"].passed
    assert bad["daily_node_users_matches_logs"].passed


def test_maintenance_creates_ahead_and_drops_past_retention(fresh_db_url: str):
    today = dt.date(2025, 6, 10)
    with connect(fresh_db_url) as conn:
        ensure_partitions(conn, [dt.date(2025, 5, 1), dt.date(2025, 6, 1)], "UTC")
        conn.execute("INSERT INTO sources (id, identity, path) VALUES (1, 'x', '/x')")
        conn.execute(
            "INSERT INTO logs (ts, source_id, byte_offset, status) VALUES "
            "('2025-05-01 10:00Z', 1, 0, 'accepted'), "
            "('2025-06-01 10:00Z', 1, 1, 'accepted')"
        )
        conn.execute(
            "INSERT INTO rejects (source_id, byte_offset, ts, reason, raw) "
            "VALUES (1, 5, '2025-05-01 10:00Z', 'empty', '')"
        )
        conn.execute(
            "INSERT INTO daily_traffic (day, connections, rejected, "
            "distinct_destinations, distinct_source_ips) VALUES ('2025-04-01', 1, 0, 1, 1)"
        )
        conn.commit()
        report = maintain(
            conn,
            today=today,
            timezone="UTC",
            ahead_days=2,
            retention_days=30,
            rollup_retention_days=60,
        )
        names = [n for n, _ in list_partitions(conn)]
        assert report.created == ["logs_2025_06_10", "logs_2025_06_11", "logs_2025_06_12"]
        assert report.dropped == ["logs_2025_05_01"]
        assert names == ["logs_2025_06_01", "logs_2025_06_10", "logs_2025_06_11", "logs_2025_06_12"]
        assert report.rejects_deleted == 1 and report.rollup_rows_deleted == 1
        assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 1
        again = maintain(conn, today=today, timezone="UTC", ahead_days=2, retention_days=30)
        assert again.created == [] and again.dropped == []


def test_maintenance_job_reports_metadata(fresh_db_url: str):
    defs = make_defs(fresh_db_url, **{"retention.ahead_days": "1"})
    assert defs.resolve_schedule_def("partition_maintenance_schedule").cron_schedule == "10 0 * * *"
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("partition_maintenance_job").execute_in_process(
            run_config={"ops": {"maintain_partitions": {"config": {"today": "2025-07-01"}}}},
            instance=instance,
        )
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["created"].value == ["logs_2025_07_01", "logs_2025_07_02"]


def test_a_quick_analyze_of_some_columns_leaves_the_full_one_to_autovacuum(loaded_db):
    url, _ = loaded_db
    with connect(url) as conn:
        lo, hi = conn.execute("SELECT min(ts), max(ts) FROM logs").fetchone()
        names = analyze_between(conn, lo, hi, ("ts", "user_id", "status"))
        assert len(names) >= 2
        stats = conn.execute(
            "SELECT tablename, attname, cardinality(histogram_bounds::text::text[]) "
            "FROM pg_stats WHERE tablename = ANY(%s)",
            (names,),
        ).fetchall()
        pending = conn.execute(
            "SELECT relname, n_mod_since_analyze, last_analyze IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (names,),
        ).fetchall()
    loaded = {t for t, *_ in stats}
    assert loaded and {a for _, a, _ in stats} == {"ts", "user_id", "status"}
    # the quick sample: a histogram of at most QUICK_SAMPLE_TARGET buckets
    assert max(n for t, a, n in stats if a == "ts") <= QUICK_SAMPLE_TARGET + 1
    # the inserted rows still count as changes since an ANALYZE: autovacuum's full one comes
    assert all(mods > 0 and analyzed for t, mods, analyzed in pending if t in loaded)
