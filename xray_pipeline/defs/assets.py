"""The `logs` asset: one sensor-planned byte range of an access log, loaded exactly once."""

import datetime as dt
import warnings
from pathlib import Path

import dagster as dg

from xray_pipeline.core.ingest import load_range
from xray_pipeline.core.rebuild import rebuild_day
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource

POOL = "xray_postgres"


class LogRangeConfig(dg.Config):
    """The byte range a run loads (set by access_log_sensor)."""

    path: str | None = None
    identity: str | None = None
    start: int | None = None
    end: int | None = None
    node: str | None = None
    watched: str | None = None


def build_logs_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    with warnings.catch_warnings():
        # `backfill_policy` is beta in Dagster 1.13: pyproject.toml pins Dagster below 1.14
        # and test_rebuild runs backfills of one and of several days: the warning, printed at
        # each load of the code location, would tell an operator nothing
        warnings.filterwarnings(
            "ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning
        )
        as_asset = _logs_decorator(partitions_def)
    return as_asset(_logs)


def _logs_decorator(partitions_def: dg.PartitionsDefinition):
    return dg.asset(
        name="logs",
        partitions_def=partitions_def,
        retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL),
        # a backfill rebuilds up to a week of days per run
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=7),
        pool=POOL,
        kinds={"postgres", "polars"},
        group_name="ingest",
        description=(
            "Access-log records in the daily-partitioned `logs` table (plus `dns_queries` and "
            "`rejects`): each sensor run loads one byte range planned by access_log_sensor, "
            "exactly once (the ingest ledger refuses a second load of a range). A run without "
            "a range (a backfill) rebuilds its days from the bytes still on disk, rotated and "
            ".gz copies included, keeping the rows whose bytes are gone."
        ),
    )


def _logs(
    context: dg.AssetExecutionContext,
    config: LogRangeConfig,
    postgres: PostgresResource,
    log_sources: LogSourcesResource,
) -> dg.MaterializeResult:
    if config.path is None or config.identity is None or config.start is None or config.end is None:
        return rebuild(context, postgres)
    with postgres.connect() as conn:
        stats = load_range(
            conn,
            Path(config.path),
            config.identity,
            config.start,
            config.end,
            timezone=postgres.timezone,
            batch_size=postgres.batch_size,
            node=config.node or log_sources.node,
            run_id=context.run.run_id,
            watched=Path(config.watched) if config.watched else None,
        )
    lag = None
    if stats.newest_ts is not None:
        lag = (dt.datetime.now(dt.UTC) - stats.newest_ts).total_seconds()
    context.log.info(
        f"{stats.lines} lines from {stats.source} bytes {config.start}-{config.end}"
        + (" (already loaded)" if stats.chunks_already_loaded else "")
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.access_rows,
            "lines": stats.lines,
            "bytes": stats.bytes,
            "dns_rows": stats.dns_rows,
            "rejects": stats.rejects,
            "lines_per_s": stats.lines_per_s,
            "lag_seconds": dg.MetadataValue.float(lag) if lag is not None else None,
            "source": stats.source,
            "node": config.node or log_sources.node or "",
            "range": f"{config.start}-{config.end}",
            "chunks_already_loaded": stats.chunks_already_loaded,
            "new_users": stats.new_users,
        }
    )


def rebuild(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """Rebuild the run's days (a backfill) from the bytes on disk."""
    reports = []
    with postgres.connect() as conn:
        for key in context.partition_keys:
            report = rebuild_day(
                conn,
                dt.date.fromisoformat(key),
                timezone=postgres.timezone,
                batch_size=postgres.batch_size,
            )
            reports.append(report)
            if report.missing:
                context.log.warning(
                    f"{key}: {len(report.missing)} of {report.ranges} range(s) are no longer on "
                    f"disk; their rows were kept as they were: {report.missing[:5]}"
                )
            context.log.info(
                f"{key}: re-read {len(report.reread)} range(s), rows {report.rows_before} -> "
                f"{report.rows_after}"
            )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(r.rows_after for r in reports),
            "days": dg.MetadataValue.json([r.day.isoformat() for r in reports]),
            "ranges_reread": sum(len(r.reread) for r in reports),
            "ranges_missing": sum(len(r.missing) for r in reports),
            "complete": all(r.complete for r in reports),
            "rows_before": sum(r.rows_before for r in reports),
            "rows_after": sum(r.rows_after for r in reports),
            "reread": dg.MetadataValue.json([x for r in reports for x in r.reread][:50]),
            "missing": dg.MetadataValue.json([x for r in reports for x in r.missing][:50]),
        }
    )
