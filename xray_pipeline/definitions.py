"""The one place that assembles the Dagster code location."""

import os
import warnings

import dagster as dg

from xray_pipeline.core.privacy import policy_from_settings
from xray_pipeline.defs.assets import build_logs_asset
from xray_pipeline.defs.checks import build_checks
from xray_pipeline.defs.jobs import build_check_job, build_load_logs_job
from xray_pipeline.defs.offline import build_offline_buffer_sensor, offline_buffer
from xray_pipeline.defs.partitions import daily_partitions
from xray_pipeline.defs.places import build_places_asset
from xray_pipeline.defs.resources import (
    LogSourcesResource,
    OfflineSpoolResource,
    PostgresResource,
)
from xray_pipeline.defs.retention import build_run_retention
from xray_pipeline.defs.rollups import build_rollup_assets
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


def _database_url(settings: Settings) -> str | dg.EnvVar | None:
    """The database URL of the resources: one from the environment is passed as a dg.EnvVar,
    so that the Dagster UI shows the variable's name, never the password in it."""
    origin = settings.origin("postgresql.url")
    if origin.startswith("environment "):
        return dg.EnvVar(origin.removeprefix("environment "))
    return settings.external_url()


def _privacy_secret(settings: Settings) -> str | dg.EnvVar | None:
    """The hashing key, passed as the variable it comes from so that the UI never shows it."""
    origin = settings.origin("privacy.secret")
    if origin.startswith("environment "):
        return dg.EnvVar(origin.removeprefix("environment "))
    secret = settings.privacy.secret
    if secret and os.environ.get("XRAY_PRIVACY_SECRET") == secret.get_secret_value():
        return dg.EnvVar("XRAY_PRIVACY_SECRET")  # `up` passes a config file's secret this way
    return secret.get_secret_value() if secret else None


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The code location for `settings` (default: config.ini, XRAY_* environment)."""
    settings = settings or load_settings()
    policy_from_settings(settings)  # a wrong [privacy] or [geoip] setting stops here, named
    partitions = daily_partitions(settings)
    logs = build_logs_asset(partitions)
    rollups = build_rollup_assets(partitions)
    places = build_places_asset(partitions)
    load_logs_job = build_load_logs_job()
    tail_job = build_tail_job()
    check_job = build_check_job()
    replay_job = dg.define_asset_job(
        name="replay_offline_buffer_job",
        selection=dg.AssetSelection.assets("offline_buffer"),
        executor_def=dg.in_process_executor,
        description="Replay the segments of the offline spool.",
    )
    maintenance_job, maintenance_schedule = build_maintenance(
        settings.timezone,
        settings.retention.ahead_days,
        settings.raw_days,
        settings.retention.rollup_days,
        settings.retention.landed_days,
    )
    prune_job, prune_schedule = build_run_retention(
        settings.dagster.run_retention_days, [logs.key, *(r.key for r in rollups)]
    )
    return dg.Definitions(
        assets=[logs, *rollups, places, offline_buffer],
        asset_checks=build_checks(
            settings.timezone,
            settings.checks.reject_rate,
            settings.checks.freshness_minutes,
            settings.checks.node_silence_minutes,
        ),
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
            dg.AutomationConditionSensorDefinition(
                "rollups_automation_sensor",
                target=dg.AssetSelection.assets(*rollups),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=30,
                description="Refreshes a day of the rollups after that day of `logs` changed.",
            ),
        ],
        resources={
            "postgres": PostgresResource(
                url=_database_url(settings),
                timezone=settings.timezone,
                batch_size=settings.batch_size,
                load_workers=settings.dagster.load_workers,
                country_db=settings.geoip.country_db,
                asn_db=settings.geoip.asn_db,
                source_ip=settings.privacy.source_ip,
                ipv4_prefix=settings.privacy.ipv4_prefix,
                ipv6_prefix=settings.privacy.ipv6_prefix,
                destination=settings.privacy.destination,
                privacy_secret=_privacy_secret(settings),
            ),
            "offline_spool": OfflineSpoolResource(path=str(settings.spool_dir)),
            "log_sources": LogSourcesResource(
                paths=list(settings.logfiles),
                node=settings.node,
                max_run_bytes=settings.dagster.max_run_bytes,
                landing_dir=str(settings.landing_dir),
            ),
        },
    )


defs = build_definitions()
