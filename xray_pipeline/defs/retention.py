"""Run retention: Dagster's own runs and their events, pruned after `[dagster] run_retention_days`.

One source makes a run per sensor tick with new lines, each with its events: left alone, the
instance's storage grows without end. Pruning deletes a finished run and its events; the rows
in the pipeline's database are not touched. The run that holds the latest materialization of a
partition is kept, so the partitions view still shows every loaded day as materialized.
"""

import datetime as dt

import dagster as dg

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
PAGE = 500


class PruneRunsConfig(dg.Config):
    """Override `[dagster] run_retention_days` for one run (0 prunes every finished run)."""

    retention_days: int | None = None


def runs_to_keep(instance: dg.DagsterInstance, asset_keys: list[dg.AssetKey]) -> set[str]:
    """The runs that hold the latest materialization of a partition of these assets."""
    keep: set[str] = set()
    for key in asset_keys:
        latest = instance.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        ids = sorted(latest.values())
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk)
            ).records
            keep.update(record.run_id for record in records)
    return keep


def prune_runs(
    instance: dg.DagsterInstance,
    *,
    before: dt.datetime,
    keep: set[str],
    log=None,
) -> tuple[int, int]:
    """Delete the finished runs created before `before`, except `keep`; (deleted, kept)."""
    deleted = kept = 0
    cursor = None
    while True:
        runs = instance.get_runs(
            dg.RunsFilter(statuses=FINISHED, created_before=before), cursor=cursor, limit=PAGE
        )
        if not runs:
            return deleted, kept
        cursor = runs[-1].run_id
        for run in runs:
            if run.run_id in keep:
                kept += 1
                continue
            instance.delete_run(run.run_id)
            deleted += 1
        if log is not None:
            log.info(f"{deleted} run(s) deleted so far")


def build_run_retention(
    retention_days: int, asset_keys: list[dg.AssetKey]
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.op(
        description=(
            "Delete Dagster runs (and their events) older than [dagster] run_retention_days, "
            "except the run holding each partition's latest materialization. The pipeline's "
            "data is not touched."
        )
    )
    def prune_dagster_runs(context: dg.OpExecutionContext, config: PruneRunsConfig) -> None:
        days = retention_days if config.retention_days is None else config.retention_days
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        keep = runs_to_keep(context.instance, asset_keys) | {context.run_id}
        deleted, kept = prune_runs(context.instance, before=before, keep=keep, log=context.log)
        context.log.info(f"deleted {deleted} run(s) created before {before:%Y-%m-%d %H:%M} UTC")
        context.add_output_metadata(
            {"deleted_runs": deleted, "kept_runs": kept, "before": before.isoformat()}
        )

    @dg.job(
        name="prune_dagster_runs_job",
        executor_def=dg.in_process_executor,
        description="Prune Dagster's own runs and events past [dagster] run_retention_days.",
    )
    def prune_dagster_runs_job():
        prune_dagster_runs()

    schedule = dg.ScheduleDefinition(
        name="prune_dagster_runs_job_schedule",
        job=prune_dagster_runs_job,
        cron_schedule="30 3 * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily at 03:30 UTC: prune Dagster's runs older than the run retention.",
    )
    return prune_dagster_runs_job, schedule
