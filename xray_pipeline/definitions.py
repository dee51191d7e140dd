"""The one place that assembles the Dagster code location."""

import dagster as dg

from xray_pipeline.defs.assets import build_logs_asset
from xray_pipeline.defs.jobs import build_load_logs_job
from xray_pipeline.defs.partitions import daily_partitions
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource
from xray_pipeline.defs.sensors import build_access_log_sensor
from xray_pipeline.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The code location for `settings` (default: config.ini, XRAY_* environment)."""
    settings = settings or load_settings()
    partitions = daily_partitions(settings)
    logs = build_logs_asset(partitions)
    load_logs_job = build_load_logs_job()
    return dg.Definitions(
        assets=[logs],
        jobs=[load_logs_job],
        sensors=[
            build_access_log_sensor(
                load_logs_job, partitions, settings.get("dagster.sensor_interval")
            )
        ],
        resources={
            "postgres": PostgresResource(
                url=settings.external_url(),
                timezone=settings.timezone,
                batch_size=settings.batch_size,
            ),
            "log_sources": LogSourcesResource(
                paths=list(settings.logfiles),
                node=settings.node,
                max_run_bytes=settings.get("dagster.max_run_bytes"),
            ),
        },
    )


defs = build_definitions()
