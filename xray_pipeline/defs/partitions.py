"""Daily partitions in the zone of the Xray clock."""

import dagster as dg

from xray_pipeline.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per local day; end_offset=1 so that today can be requested."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.dagster.start_date,
        timezone=settings.timezone,
        end_offset=1,
    )
