"""Daily partition maintenance and hourly data-quality checks."""

import datetime as dt
import zoneinfo
from pathlib import Path

import dagster as dg

from xray_pipeline.core.archive.tiering import (
    archived_through,
    delete_archived_before,
    leave_postgres,
)
from xray_pipeline.core.db.maintenance import maintain
from xray_pipeline.core.fleet.landing import prune_landed
from xray_pipeline.core.ingest.compact import compact_ledger
from xray_pipeline.core.ingest.ledger import loaded_bytes_by_path
from xray_pipeline.core.ingest.offline import prune_spool
from xray_pipeline.defs.resources import (
    ArchiveResource,
    LogSourcesResource,
    OfflineSpoolResource,
    PostgresResource,
)


class MaintenanceConfig(dg.Config):
    """Override the day the maintenance counts from (default: today in the Xray zone)."""

    today: str | None = None


def build_maintenance(
    timezone: str,
    ahead_days: int,
    retention_days: int | None,
    rollup_retention_days: int | None,
    landed_days: int = 30,
    hot_days: int | None = None,
):
    # landed bytes are kept no longer than the rows they became
    landed_days = min(landed_days, retention_days or landed_days)

    @dg.op(
        description=(
            "Create the next days' partitions of `logs` ahead of time; drop partitions, DNS "
            "lines, rejects and spool segments older than [retention] raw_days and rollup rows "
            "older than [retention] rollup_days; move the days older than [retention] "
            "hot_days out of PostgreSQL once their archive checks out (a day that does not "
            "stays, and the logs_archive check says why); remove the nodes' landed bytes that "
            "are loaded and archived, or older than [retention] landed_days (at most "
            "raw_days); merge the ledger's adjacent ranges loaded more than ten minutes ago."
        )
    )
    def maintain_partitions(
        context: dg.OpExecutionContext,
        config: MaintenanceConfig,
        postgres: PostgresResource,
        log_sources: LogSourcesResource,
        offline_spool: OfflineSpoolResource,
        archive: ArchiveResource,
    ) -> dict:
        today = (
            dt.date.fromisoformat(config.today)
            if config.today
            else dt.datetime.now(zoneinfo.ZoneInfo(timezone)).date()
        )
        with postgres.connect() as conn:
            report = maintain(
                conn,
                today=today,
                timezone=timezone,
                ahead_days=ahead_days,
                retention_days=retention_days,
                rollup_retention_days=rollup_retention_days,
            )
            compaction = compact_ledger(conn, timezone=timezone)
            tiers, expired = None, []
            if retention_days is not None and archive.enabled:
                expired = delete_archived_before(
                    conn, archive.store(), today - dt.timedelta(days=retention_days)
                )
            if hot_days is not None and archive.enabled:
                tiers = leave_postgres(
                    conn, archive.store(), today=today, hot_days=hot_days, timezone=timezone
                )
                _report_tiers(context, tiers)
            loaded = loaded_bytes_by_path(conn)
            # a landed line of a day in the archive is kept there
            archived = archived_through(conn, today, timezone) if archive.enabled else None
        removed: list[tuple[str, int]] = []
        if log_sources.landing_dir:
            before = dt.datetime.now(dt.UTC) - dt.timedelta(days=landed_days)
            if archived is not None:
                before = max(before, archived)
            sizes = {p: Path(p).stat().st_size for p in loaded if Path(p).exists()}
            removed = [
                (str(p), sizes.get(str(p), 0))
                for p in prune_landed(Path(log_sources.landing_dir), loaded, before)
            ]
        spool_removed: list[Path] = []
        if retention_days is not None:
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)
            spool_removed = prune_spool(offline_spool.folder(), cutoff.timestamp())
            for path in spool_removed:
                context.log.warning(
                    f"{path.name}: spooled more than {retention_days} days ago "
                    "and never replayed; removed by [retention] raw_days"
                )
        context.add_output_metadata(
            {
                "today": today.isoformat(),
                "spool_segments_removed": len(spool_removed),
                "created": dg.MetadataValue.json(report.created),
                "dropped": dg.MetadataValue.json(report.dropped),
                "rollup_rows_deleted": report.rollup_rows_deleted,
                "dns_rows_deleted": report.dns_rows_deleted,
                "rejects_deleted": report.rejects_deleted,
                "landed_segments_removed": len(removed),
                "landed_bytes_removed": sum(size for _, size in removed),
                "ledger_rows_merged": compaction.removed,
                "days_archived_and_dropped": dg.MetadataValue.json(
                    [d.isoformat() for d in tiers.dropped] if tiers else []
                ),
                "archived_days_deleted": len(expired),
                "days_kept_hot": dg.MetadataValue.json(
                    {d.isoformat(): why for d, why in tiers.kept.items()} if tiers else {}
                ),
            }
        )
        context.log.info(
            f"created {len(report.created)} partition(s), dropped {len(report.dropped)}"
        )
        return {"created": report.created, "dropped": report.dropped}

    @dg.job(
        name="partition_maintenance_job",
        executor_def=dg.in_process_executor,
        description="Partitions of `logs` ahead of time, and retention.",
    )
    def partition_maintenance_job():
        maintain_partitions()

    schedule = dg.ScheduleDefinition(
        name="partition_maintenance_schedule",
        job=partition_maintenance_job,
        cron_schedule="10 0 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily, just after midnight in the Xray zone.",
    )
    return partition_maintenance_job, schedule


def _report_tiers(context: dg.OpExecutionContext, tiers) -> None:
    """Log the days moved out of PostgreSQL and, as a failed logs_archive check, the days past
    [retention] hot_days that stay, with why."""
    from xray_pipeline.defs.archive import CHECK

    if tiers.dropped:
        context.log.info(
            f"{len(tiers.dropped)} archived day(s) left PostgreSQL: "
            + ", ".join(d.isoformat() for d in tiers.dropped)
        )
    for day, why in tiers.kept.items():
        context.log.warning(f"{day} stays in PostgreSQL past [retention] hot_days: {why}")
    if tiers.kept:
        context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("logs_archive"),
                check_name=CHECK,
                passed=False,
                metadata={
                    "problems": dg.MetadataValue.json(
                        {d.isoformat(): why for d, why in tiers.kept.items()}
                    )
                },
                description=f"{len(tiers.kept)} day(s) past [retention] hot_days stay in "
                "PostgreSQL: their archive is missing or differs",
            )
        )


CHECKS = ("logs_reconciliation", "logs_reject_rate")  # the checks that take a day


def build_checks_schedule(check_job, timezone: str):
    @dg.schedule(
        name="data_quality_schedule",
        job=check_job,
        cron_schedule="5 * * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: the data-quality checks of `logs` on today (in the Xray zone).",
    )
    def data_quality_schedule(context: dg.ScheduleEvaluationContext):
        today = context.scheduled_execution_time.astimezone(zoneinfo.ZoneInfo(timezone)).date()
        return dg.RunRequest(
            run_key=f"checks-{context.scheduled_execution_time.isoformat()}",
            run_config={
                "ops": {f"logs_{name}": {"config": {"day": today.isoformat()}} for name in CHECKS}
            },
            tags={"xray/day": today.isoformat()},
        )

    return data_quality_schedule


class MigrationConfig(dg.Config):
    """Options of the legacy migration ([migration] drop_old by default)."""

    drop_old: bool | None = None
    batch_days: int = 7
    dry_run: bool = False


def build_migration_job(timezone: str, drop_old_default: bool):
    @dg.op(
        description=(
            "Move the original tool's `logs` table to the partitioned schema, day by day, "
            "resumable and verified (see `xray-pipeline migrate`)."
        )
    )
    def migrate_legacy_logs(
        context: dg.OpExecutionContext, config: MigrationConfig, postgres: PostgresResource
    ) -> dict:
        from xray_pipeline.core.ingest.legacy import migrate, plan

        with postgres.connect(upgrade=False) as conn:
            if config.dry_run:
                report = plan(conn, timezone)
            else:
                report = migrate(
                    conn,
                    timezone=timezone,
                    batch_days=config.batch_days,
                    drop_old=drop_old_default if config.drop_old is None else config.drop_old,
                    on_day=lambda r, done, total: context.log.info(
                        f"{r.day}: {r.rows} rows in {r.seconds:.2f} s ({done}/{total})"
                    ),
                )
        context.add_output_metadata(
            {
                "layout": report.layout,
                "dry_run": config.dry_run,
                "days_total": report.days_total,
                "rows_total": report.rows_total,
                "days_migrated_now": len(report.days),
                "days_done_before": report.days_done_before,
                "dropped_old": report.dropped_old,
            }
        )
        return {"layout": report.layout, "days": len(report.days)}

    @dg.job(
        name="migrate_legacy_logs_job",
        executor_def=dg.in_process_executor,
        description="Migrate a legacy unpartitioned `logs` table to this schema.",
    )
    def migrate_legacy_logs_job():
        migrate_legacy_logs()

    return migrate_legacy_logs_job
