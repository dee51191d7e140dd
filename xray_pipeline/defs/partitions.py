"""Daily partitions in the zone of the Xray clock, from the day the logs start."""

import datetime as dt
import zoneinfo

import dagster as dg

from xray_pipeline.core.runtime.supervisor import recorded_start_date
from xray_pipeline.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per local day; end_offset=1 so that today can be requested. The first
    day is [dagster] start_date, else the one the first `up` or `demo` recorded (the first
    day of the logs), else today."""
    today = dt.datetime.now(zoneinfo.ZoneInfo(settings.timezone)).date().isoformat()
    start = settings.dagster.start_date or recorded_start_date(settings) or today
    return dg.DailyPartitionsDefinition(
        start_date=start,
        timezone=settings.timezone,
        end_offset=1,
    )
