"""Daily rollups of `logs`, partitioned like it and refreshed when their day changes."""

import datetime as dt

import dagster as dg

from xray_pipeline.core.db.rollups import COUNTED_ROWS, rebuild_rollup, rollup_totals
from xray_pipeline.defs.assets import POOL
from xray_pipeline.defs.resources import PostgresResource

# A day of a rollup is rebuilt after that day of `logs` changed (an older day rebuilt by a
# backfill, the latest day while lines arrive), once no run of either is in progress. The
# current day changes with every load of a tail run, and the API reads it from `logs` itself:
# its rollups are rebuilt at most every ROLLUP_TODAY_CRON tick (then once more after the day
# ends), so that a day's rebuilds do not grow with its rows. Not `eager()`: it only looks at
# the latest day and waits for every upstream day to exist.
ROLLUP_TODAY_CRON = "*/15 * * * *"
ROLLUP_CONDITION = (
    dg.AutomationCondition.any_deps_updated().since(
        dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
    )
    & (
        ~dg.AutomationCondition.in_latest_time_window()
        | dg.AutomationCondition.cron_tick_passed(ROLLUP_TODAY_CRON).since(
            dg.AutomationCondition.newly_requested()
        )
    )
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("day of logs changed")

DESCRIPTIONS = {
    "daily_traffic": (
        "Per local day x user x protocol x inbound tag x outbound tag: connections, rejected, "
        "distinct destinations, distinct source IPs. Rebuilt for a day from `logs` whenever "
        "that day of `logs` changes."
    ),
    "daily_user_ips": (
        "Per local day x user x source address: connections, first seen, last seen. The "
        "basis of the per-user views and of shared-account detection."
    ),
    "daily_user_destinations": (
        "Per local day x user x destination (host and port): connections. A user's page reads "
        "its top destinations for whole past days from here."
    ),
    "daily_user_activity": (
        "Per local day x user x quarter hour: connections, first and last seen. A user's page "
        "cuts its sessions from these rows for whole past days."
    ),
    "hourly_traffic": (
        "Per local day x local hour x protocol x inbound tag x outbound tag: connections, "
        "rejected. No user dimension, so a day is a few thousand rows: the API's "
        "time series read it for whole past days."
    ),
    "daily_totals": (
        "Per local day x protocol x inbound tag x outbound tag: connections, rejected. About a "
        "hundred rows a day: the API's totals and distributions read it for whole past days."
    ),
    "daily_node_users": (
        "Per local day x node x user: connections, rejected, first and last seen. The users "
        "list filtered by node reads it, and it says on how many nodes a user was."
    ),
    "daily_places": (
        "Per local day x country x ASN: connections, rejected, the sources placed as "
        "`ip_places` holds them (rebuilt after a backfill of `ip_places`). The top countries "
        "and networks, and the daily series of one country or network, read it for whole "
        "past days."
    ),
}
# the assets a rollup is built from besides `logs`
EXTRA_DEPS = {"daily_places": ["ip_places"]}


def build_rollup_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    assets = []
    for table, description in DESCRIPTIONS.items():
        assets.append(_rollup(table, description, partitions_def))
    return assets


def _rollup(
    table: str, description: str, partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        name=table,
        deps=["logs", *EXTRA_DEPS.get(table, [])],
        partitions_def=partitions_def,
        automation_condition=ROLLUP_CONDITION,
        pool=POOL,
        kinds={"postgres"},
        group_name="rollups",
        description=description,
        check_specs=[
            dg.AssetCheckSpec(
                name=f"{table}_matches_logs",
                asset=table,
                description=f"The day's {table}.connections add up to the day's rows in logs"
                + (" that have a destination." if table in COUNTED_ROWS else "."),
            )
        ],
    )
    def rollup(context: dg.AssetExecutionContext, postgres: PostgresResource):
        day = dt.date.fromisoformat(context.partition_key)
        with postgres.connect() as conn:
            rows = rebuild_rollup(conn, table, day, postgres.timezone)
            total, source_rows = rollup_totals(conn, table, day, postgres.timezone)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "logs_rows": source_rows, "day": day.isoformat()},
            check_results=[
                dg.AssetCheckResult(
                    check_name=f"{table}_matches_logs",
                    passed=total == source_rows,
                    metadata={"rollup_total": total, "logs_rows": source_rows},
                )
            ],
        )

    return rollup


def build_rollups_sensor(rollups: list[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """rollups_automation_sensor: the rollups' automation conditions, every 30 s."""
    return dg.AutomationConditionSensorDefinition(
        "rollups_automation_sensor",
        target=dg.AssetSelection.assets(*rollups),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Refreshes a day of the rollups after that day of `logs` changed.",
    )
