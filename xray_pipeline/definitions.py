"""The one place that assembles the Dagster code location."""

import warnings

import dagster as dg

from xray_pipeline.core.privacy.policy import policy_from_settings
from xray_pipeline.defs.archive import (
    build_archive_asset,
    build_archive_sensor,
    logs_archive_verified,
)
from xray_pipeline.defs.assets import build_logs_asset
from xray_pipeline.defs.checks import build_checks
from xray_pipeline.defs.incidents import (
    build_alerts_sensor,
    build_incidents_asset,
    incidents_alerts_delivered,
    incidents_consistent,
)
from xray_pipeline.defs.jobs import build_check_job, build_load_logs_job
from xray_pipeline.defs.offline import build_offline_buffer_sensor, build_replay_job, offline_buffer
from xray_pipeline.defs.partitions import daily_partitions
from xray_pipeline.defs.places import build_places_asset
from xray_pipeline.defs.resources import build_resources
from xray_pipeline.defs.retention import build_run_retention
from xray_pipeline.defs.rollups import build_rollup_assets, build_rollups_sensor
from xray_pipeline.defs.schedules import (
    build_checks_schedule,
    build_maintenance,
    build_migration_job,
)
from xray_pipeline.defs.sensors import Tailing, build_access_log_sensor
from xray_pipeline.defs.tail import build_tail_job
from xray_pipeline.settings import Settings, load_settings

# Dagster 1.13 warns that a sensor's `owners` is beta whenever it resolves the asset job of a
# sensor that targets several jobs (access_log_sensor: load_logs_job and tail_logs_job), at
# each load of the code location, though no owner is set: it would tell an operator nothing
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer `SensorDefinition", category=dg.BetaWarning
)
# logs_archive's single-run backfill policy (a backfill of many days is one run) is beta in
# 1.13: the warning at each load would tell an operator nothing either
warnings.filterwarnings(
    "ignore", message="Parameter `backfill_policy` of function `asset`", category=dg.BetaWarning
)


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The code location for `settings` (default: config.ini, XRAY_* environment)."""
    settings = settings or load_settings()
    policy_from_settings(settings)  # a wrong [privacy] or [geoip] setting stops here, named
    partitions = daily_partitions(settings)
    logs = build_logs_asset(partitions)
    rollups = build_rollup_assets(partitions)
    places = build_places_asset(partitions)
    incidents = build_incidents_asset(partitions)
    load_logs_job = build_load_logs_job()
    tail_job = build_tail_job()
    check_job = build_check_job()
    replay_job = build_replay_job()
    maintenance_job, maintenance_schedule = build_maintenance(
        settings.timezone,
        settings.retention.ahead_days,
        settings.raw_days,
        settings.retention.rollup_days,
        settings.retention.landed_days,
        settings.hot_days,
    )
    archived = []  # the archive's asset, check and sensor, when [archive] enabled
    if settings.archive.enabled:
        archive = build_archive_asset(partitions)
        archived = [archive, logs_archive_verified, build_archive_sensor(archive)]
    prune_job, prune_schedule = build_run_retention(
        settings.dagster.run_retention_days, [logs.key, *(r.key for r in rollups)]
    )
    return dg.Definitions(
        assets=[logs, *rollups, places, incidents, offline_buffer, *archived[:1]],
        asset_checks=[
            *build_checks(
                settings.timezone,
                settings.checks.reject_rate,
                settings.checks.freshness_minutes,
                settings.checks.node_silence_minutes,
            ),
            incidents_consistent,
            incidents_alerts_delivered,
            *archived[1:2],
        ],
        jobs=[
            load_logs_job,
            tail_job,
            check_job,
            maintenance_job,
            replay_job,
            build_migration_job(settings.timezone, settings.migration.drop_old),
            prune_job,
        ],
        schedules=[
            maintenance_schedule,
            build_checks_schedule(check_job, settings.timezone),
            prune_schedule,
        ],
        sensors=[
            build_access_log_sensor(
                load_logs_job,
                tail_job,
                partitions,
                settings.dagster.sensor_interval,
                Tailing(settings.dagster.tail_minutes, settings.dagster.tail_poll_seconds),
            ),
            build_offline_buffer_sensor(replay_job),
            build_alerts_sensor(),
            build_rollups_sensor(rollups),
            *archived[2:],
        ],
        resources=build_resources(settings),
    )


defs = build_definitions()
