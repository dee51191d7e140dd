"""The `logs` asset: one sensor-planned byte range of an access log, loaded exactly once."""

import datetime as dt
from pathlib import Path

import dagster as dg

from xray_pipeline.core.ingest import load_range
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
    @dg.asset(
        name="logs",
        partitions_def=partitions_def,
        retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL),
        pool=POOL,
        kinds={"postgres", "polars"},
        group_name="ingest",
        description=(
            "Access-log records in the daily-partitioned `logs` table (plus `dns_queries` and "
            "`rejects`): each run loads one byte range planned by access_log_sensor, exactly "
            "once (the ingest ledger refuses a second load of a range)."
        ),
    )
    def logs(
        context: dg.AssetExecutionContext,
        config: LogRangeConfig,
        postgres: PostgresResource,
        log_sources: LogSourcesResource,
    ) -> dg.MaterializeResult:
        if (
            config.path is None
            or config.identity is None
            or config.start is None
            or config.end is None
        ):
            raise dg.Failure(
                "this run has no byte range: runs of `logs` are planned by access_log_sensor. "
                "Rebuilding a whole day from the UI (a backfill) is not available yet."
            )
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

    return logs
