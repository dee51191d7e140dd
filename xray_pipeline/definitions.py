"""The one place that assembles the Dagster code location."""

import os
import warnings

import dagster as dg

from xray_pipeline.core.alerts.targets import AlertTargets
from xray_pipeline.core.privacy.policy import policy_from_settings
from xray_pipeline.core.rules.evaluate import RulesConfig
from xray_pipeline.defs.assets import build_logs_asset
from xray_pipeline.defs.checks import build_checks
from xray_pipeline.defs.incidents import (
    build_alerts_sensor,
    build_incidents_asset,
    incidents_alerts_delivered,
    incidents_consistent,
)
from xray_pipeline.defs.jobs import build_check_job, build_load_logs_job
from xray_pipeline.defs.offline import build_offline_buffer_sensor, offline_buffer
from xray_pipeline.defs.partitions import daily_partitions
from xray_pipeline.defs.places import build_places_asset
from xray_pipeline.defs.resources import (
    LogSourcesResource,
    OfflineSpoolResource,
    PostgresResource,
    RulesResource,
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


def _secret(settings: Settings, name: str, variable: str) -> str | dg.EnvVar | None:
    """A secret setting (`section.key`), passed as the variable it comes from so that the UI
    never shows it."""
    origin = settings.origin(name)
    if origin.startswith("environment "):
        return dg.EnvVar(origin.removeprefix("environment "))
    section, key = name.split(".")
    secret = getattr(getattr(settings, section), key)
    if secret and os.environ.get(variable) == secret.get_secret_value():
        return dg.EnvVar(variable)  # `up` passes a config file's secret this way
    return secret.get_secret_value() if secret else None


def _rules(settings: Settings) -> RulesResource:
    """The [rules] and [alerts] of `settings` as a resource (a wrong one stops here, named)."""
    rules, alerts = settings.rules, settings.alerts
    RulesConfig.from_settings(settings)
    AlertTargets.from_settings(settings)
    return RulesResource(
        evaluate=rules.evaluate,
        ip_limit=rules.ip_limit,
        ip_window_minutes=rules.ip_window_minutes,
        ip_count_by=rules.ip_count_by,
        watched_tags=list(rules.watched_tags),
        tagged_limit=rules.tagged_limit,
        tagged_window_minutes=rules.tagged_window_minutes,
        rejected_limit=rules.rejected_limit,
        rejected_window_minutes=rules.rejected_window_minutes,
        quiet_minutes=rules.quiet_minutes,
        on_open_command=rules.on_open_command,
        on_open_dry_run=rules.on_open_dry_run,
        webhook_url=alerts.webhook_url,
        webhook_secret=_secret(settings, "alerts.webhook_secret", "XRAY_ALERTS_WEBHOOK_SECRET"),
        telegram_token=_secret(settings, "alerts.telegram_token", "XRAY_TELEGRAM_BOT_TOKEN"),
        telegram_chat_id=alerts.telegram_chat_id,
        telegram_api=alerts.telegram_api,
        attempts=alerts.attempts,
        backoff_seconds=alerts.backoff_seconds,
        cooldown_minutes=alerts.cooldown_minutes,
        max_age_minutes=alerts.max_age_minutes,
        timeout_seconds=alerts.timeout_seconds,
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
    rules = _rules(settings)
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
        assets=[logs, *rollups, places, incidents, offline_buffer],
        asset_checks=[
            *build_checks(
                settings.timezone,
                settings.checks.reject_rate,
                settings.checks.freshness_minutes,
                settings.checks.node_silence_minutes,
            ),
            incidents_consistent,
            incidents_alerts_delivered,
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
                privacy_secret=_secret(settings, "privacy.secret", "XRAY_PRIVACY_SECRET"),
            ),
            "rules": rules,
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
