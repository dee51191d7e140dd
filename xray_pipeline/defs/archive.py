"""logs_archive: each closed day of `logs`, `dns_queries` and `rejects` in Parquet, partitioned
like `logs`, written again when that day of `logs` changes (a backfill, late lines); checked
against the database as it is written and on demand."""

import datetime as dt
import zoneinfo

import dagster as dg

from xray_pipeline.core.archive.verify import day_is_hot, verify_day
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.defs.assets import POOL
from xray_pipeline.defs.resources import ArchiveResource, PostgresResource

CHECK = "logs_archive_matches_logs"
# a closed day is archived once, then again after its day of `logs` changed; never today
ARCHIVE_CONDITION = (
    ~dg.AutomationCondition.in_latest_time_window()
    & (
        dg.AutomationCondition.missing()
        | dg.AutomationCondition.any_deps_updated().since(
            dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
        )
    )
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("closed day not archived, or changed since")


def build_archive_asset(
    partitions_def: dg.TimeWindowPartitionsDefinition,
) -> dg.AssetsDefinition:
    @dg.asset(
        name="logs_archive",
        deps=["logs"],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=ARCHIVE_CONDITION,
        pool=POOL,
        kinds={"parquet"},
        group_name="archive",
        check_specs=[
            dg.AssetCheckSpec(
                name=CHECK,
                asset="logs_archive",
                description="The archived files are whole (SHA-256 of the manifest) and hold "
                "the day's rows of PostgreSQL: the same count and the same rows.",
            )
        ],
    )
    def logs_archive(
        context: dg.AssetExecutionContext, postgres: PostgresResource, archive: ArchiveResource
    ) -> dg.MaterializeResult:
        """A closed local day of logs, dns_queries and rejects as Parquet (zstd, sorted by user
        and time, names resolved) in the day's folder of the archive ([archive] url), with a
        manifest (files, rows, SHA-256, schema version). A day already gone from PostgreSQL
        ([retention] hot_days) is checked, not written. Several days run as one run."""
        window = context.partition_time_window
        first = dt.date.fromisoformat(window.start.strftime("%Y-%m-%d"))
        count = (window.end - window.start).days
        days = [first + dt.timedelta(days=i) for i in range(count)]
        today = dt.datetime.now(zoneinfo.ZoneInfo(postgres.timezone)).date()
        if days[-1] >= today:
            raise dg.Failure(
                f"{days[-1]} is not over yet: a day is archived once it has ended "
                f"(in [parser] timezone {postgres.timezone}); choose days before {today}"
            )
        store = archive.store()
        rows = size = files = 0
        seconds = 0.0
        problems: dict[str, str] = {}
        with postgres.connect() as conn:
            for i, day in enumerate(days, 1):
                if day_is_hot(conn, day):
                    written = archive_day(conn, store, day, postgres.timezone)
                    rows, size, files = (
                        rows + written.rows(),
                        size + written.bytes,
                        files + len(written.files),
                    )
                    seconds += written.seconds
                    context.log.info(
                        f"{day}: {written.rows():,} rows, {written.bytes / 1e6:.1f} MB in "
                        f"{len(written.files)} files, {written.seconds:.1f} s ({i}/{len(days)})"
                    )
                check = verify_day(conn, store, day, postgres.timezone)
                if not check.ok:
                    problems[day.isoformat()] = "; ".join(check.problems)
                    context.log.warning(f"{day}: {problems[day.isoformat()]}")
        return dg.MaterializeResult(
            metadata={
                "days": len(days),
                "dagster/row_count": rows,
                "bytes": size,
                "bytes_per_row": round(size / rows, 1) if rows else 0.0,
                "files": files,
                "seconds": round(seconds, 2),
                "archive": dg.MetadataValue.path(store.root),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK,
                    passed=not problems,
                    description=None if not problems else f"{len(problems)} day(s) differ",
                    metadata={"problems": dg.MetadataValue.json(problems), "days": len(days)},
                )
            ],
        )

    return logs_archive


class ArchiveCheckConfig(dg.Config):
    """The archived day to check (YYYY-MM-DD); default: the days not verified since they were
    written or found wrong; `every_day` checks them all."""

    day: str | None = None
    every_day: bool = False


@dg.asset_check(asset="logs_archive", blocking=False)
def logs_archive_verified(
    config: ArchiveCheckConfig, postgres: PostgresResource, archive: ArchiveResource
) -> dg.AssetCheckResult:
    """Archived days are whole and equal to PostgreSQL while they are still there: a missing,
    changed or disagreeing file fails, naming the day and the file."""
    store = archive.store()
    with postgres.connect() as conn:
        if config.day:
            days = [dt.date.fromisoformat(config.day)]
        else:
            where = "" if config.every_day else " WHERE verified_at IS NULL"
            days = [r[0] for r in conn.execute(f"SELECT day FROM archive_days{where} ORDER BY day")]
        problems = {}
        for day in days:
            check = verify_day(conn, store, day, postgres.timezone)
            if not check.ok:
                problems[day.isoformat()] = "; ".join(check.problems)
    return dg.AssetCheckResult(
        passed=not problems,
        description=None
        if not problems
        else "; ".join(f"{d}: {p}" for d, p in list(problems.items())[:3]),
        metadata={"days_checked": len(days), "problems": dg.MetadataValue.json(problems)},
    )


def build_archive_sensor(archive_asset: dg.AssetsDefinition) -> dg.SensorDefinition:
    """archive_automation_sensor: the archive's automation condition, every 5 minutes."""
    return dg.AutomationConditionSensorDefinition(
        "archive_automation_sensor",
        target=dg.AssetSelection.assets(archive_asset),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=300,
        description="Archives each closed day of `logs`, and again after that day changed.",
    )
