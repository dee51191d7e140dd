"""The `logs` asset: one sensor-planned byte range of an access log, loaded exactly once."""

import datetime as dt
import warnings
from pathlib import Path
from typing import Literal

import dagster as dg

from xray_pipeline.core.archive.restore import restore_day
from xray_pipeline.core.archive.verify import day_is_hot
from xray_pipeline.core.db.partitions import partition_rows
from xray_pipeline.core.ingest.loader import RangeLoad
from xray_pipeline.core.ingest.rebuild import RebuildReport, rebuild_day
from xray_pipeline.core.ingest.stats import RunStats
from xray_pipeline.defs.judge import incidents_metadata, judge_load
from xray_pipeline.defs.resources import (
    ArchiveResource,
    LogSourcesResource,
    PostgresResource,
    RulesResource,
)

POOL = "xray_postgres"


class LogRange(dg.Config):
    """Bytes [start, end) of the file with `identity` (at `path`, or a rotated copy of the
    `watched` live file), stored with `node`."""

    path: str
    identity: str
    start: int
    end: int
    node: str | None = None
    watched: str | None = None


NODE_TAG = "xray/node"


class LogRangeConfig(dg.Config):
    """The byte ranges a run loads, of one day, any number of sources (set by
    access_log_sensor); none: a backfill, which rebuilds the run's days (of one `node` only,
    when set here or as the run tag `xray/node`, as a backfill launched from the UI can):
    `rebuild_from` bytes re-reads the bytes still on disk (a day only in the archive is
    restored from it first), `archive` replaces the days' rows by the archive's."""

    ranges: list[LogRange] = []  # noqa: RUF012 (pydantic copies defaults)
    node: str | None = None
    rebuild_from: Literal["bytes", "archive"] = "bytes"


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
            "`rejects`): each sensor run loads the byte ranges of one day that "
            "access_log_sensor planned, of every source, exactly once (the ingest ledger "
            "refuses a second load of a range), then judges those rows against the abuse rules "
            "(a materialization of `incidents`). A run without ranges (a backfill) rebuilds its "
            "days from the bytes still on disk, rotated and .gz copies included, keeping the "
            "rows whose bytes are gone."
        ),
    )


def _logs(
    context: dg.AssetExecutionContext,
    config: LogRangeConfig,
    postgres: PostgresResource,
    log_sources: LogSourcesResource,
    rules: RulesResource,
    archive: ArchiveResource,
) -> dg.MaterializeResult:
    if not config.ranges:
        node = config.node or context.run.tags.get(NODE_TAG)
        return rebuild(context, postgres, node, archive=archive, source=config.rebuild_from)
    items = [
        RangeLoad(
            Path(i.path),
            i.identity,
            i.start,
            i.end,
            node=i.node or log_sources.node,
            watched=Path(i.watched) if i.watched else None,
        )
        for i in config.ranges
    ]
    postgres.connect().close()  # the schema applied before the loads
    with postgres.loader(context.run.run_id) as loader:
        loaded = loader.load(items)
    for item, stats in zip(config.ranges, loaded, strict=True):
        context.log.info(
            f"{stats.lines} lines from {stats.source} bytes {item.start}-{item.end}"
            + (" (already loaded)" if stats.chunks_already_loaded else "")
        )
    nodes = [i.node or log_sources.node for i in config.ranges]
    spans = [(i.identity, i.start, i.end) for i in config.ranges]
    with postgres.connect(upgrade=False) as conn:
        evaluation = judge_load(conn, rules, loaded)
        if evaluation is not None:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key="incidents",
                    partition=context.partition_key,
                    metadata=incidents_metadata(conn, evaluation),
                )
            )
        day = dt.date.fromisoformat(context.partition_key)
        rows = partition_rows(conn, day, postgres.timezone)
    return dg.MaterializeResult(metadata=load_metadata(loaded, spans, nodes, rows))


# what the `node` metadata calls a local file of no node ([parser] node unset)
LOCAL = "local"


def load_metadata(
    loaded: list[RunStats],
    spans: list[tuple[str, int, int]],
    nodes: list[str | None],
    partition_rows: int,
) -> dict:
    """The metadata of a load of byte ranges (`spans`: identity, start, end), the same for a
    sensor run and each load of a tail run: the partition's rows as the UI's row count, the
    load's own as `rows`."""
    newest = max((s.newest_ts for s in loaded if s.newest_ts is not None), default=None)
    lag = None if newest is None else (dt.datetime.now(dt.UTC) - newest).total_seconds()
    seconds = sum(s.duration_s for s in loaded)
    lines = sum(s.lines for s in loaded)
    return {
        "dagster/row_count": partition_rows,
        "rows": sum(s.access_rows for s in loaded),
        "lines": lines,
        "bytes": sum(s.bytes for s in loaded),
        "dns_rows": sum(s.dns_rows for s in loaded),
        "rejects": sum(s.rejects for s in loaded),
        "lines_per_s": round(lines / seconds, 1) if seconds else 0.0,
        "load_seconds": round(seconds, 3),
        "lag_seconds": dg.MetadataValue.float(lag) if lag is not None else None,
        "sources": len({identity for identity, _, _ in spans}),
        "source": ", ".join(dict.fromkeys(s.source for s in loaded)),
        "node": ", ".join(dict.fromkeys(node or LOCAL for node in nodes)),
        "range": ", ".join(f"{start}-{end}" for _, start, end in spans),
        "chunks_already_loaded": sum(s.chunks_already_loaded for s in loaded),
        "new_users": sum(s.new_users for s in loaded),
        "new_places": sum(s.new_places for s in loaded),
    }


def rebuild(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    node: str | None = None,
    *,
    archive: ArchiveResource | None = None,
    source: str = "bytes",
) -> dg.MaterializeResult:
    """Rebuild the run's days (a backfill) from the bytes on disk (of one node's sources);
    a day only in the archive is restored from it first, and with `source` archive every day
    is restored from it and no byte is read."""
    reports = []
    store = archive.store() if archive is not None and archive.enabled else None
    with postgres.connect() as conn:
        archived = {r[0] for r in conn.execute("SELECT day FROM archive_days")}
        conn.commit()
        for key in context.partition_keys:
            day = dt.date.fromisoformat(key)
            restored: dict[str, int] = {}
            if (
                store is not None
                and day in archived
                and (source == "archive" or not day_is_hot(conn, day))
            ):
                restored = restore_day(conn, store, day, postgres.timezone)
                context.log.info(f"{key}: restored from the archive: {restored}")
            elif source == "archive":
                raise dg.Failure(
                    f"{key} is not in the archive ([archive] enabled, logs_archive "
                    "materialized for it): rebuild it from bytes instead",
                    allow_retries=False,
                )
            if source == "archive":
                rows = sum(restored.values())
                reports.append(RebuildReport(day, rows_before=rows, rows_after=rows))
                continue
            report = rebuild_day(
                conn,
                day,
                timezone=postgres.timezone,
                batch_size=postgres.batch_size,
                node=node,
                policy=postgres.policy(),
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
            "node": node or "(every source)",
            "ranges_reread": sum(len(r.reread) for r in reports),
            "ranges_missing": sum(len(r.missing) for r in reports),
            "complete": all(r.complete for r in reports),
            "rows_before": sum(r.rows_before for r in reports),
            "rows_after": sum(r.rows_after for r in reports),
            "reread": dg.MetadataValue.json([x for r in reports for x in r.reread][:50]),
            "missing": dg.MetadataValue.json([x for r in reports for x in r.missing][:50]),
        }
    )
