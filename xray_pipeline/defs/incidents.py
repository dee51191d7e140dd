"""The `incidents` asset (the abuse rules' breaches), its checks, and incident_alerts_sensor.

Every load judges its own rows (the tail run and the sensor runs report each evaluation as a
materialization of the day's `incidents` partition); materializing a partition here is the
re-evaluation of past days after a rule change.
"""

import datetime as dt
import zoneinfo

import dagster as dg

from xray_pipeline.core.alerts.outbox import deliver
from xray_pipeline.core.rules.evaluate import Evaluation, evaluate_range, forget_day
from xray_pipeline.defs.assets import POOL
from xray_pipeline.defs.judge import incidents_metadata
from xray_pipeline.defs.resources import PostgresResource, RulesResource


def build_incidents_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="incidents",
        deps=["logs"],
        partitions_def=partitions_def,
        pool=POOL,
        kinds={"postgres", "polars"},
        group_name="rules",
    )
    def incidents(
        context: dg.AssetExecutionContext, postgres: PostgresResource, rules: RulesResource
    ) -> dg.MaterializeResult:
        """Breaches of the abuse rules ([rules]): a user over the IP limit, a user's traffic
        to a watched tag, a source's storm of rejected connections; one row per episode,
        updated while it lasts, closed after quiet_minutes. Each load judges its own rows, so
        this partition is materialized by every load of its day. Materialize (backfill) past
        days after changing a rule: their incidents are replaced by what the rules in force
        find, judged in 15-minute steps as the loads were; their notifications are not sent
        again (older than [alerts] max_age_minutes, they are kept as stale)."""
        if not rules.evaluate:
            context.log.warning("[rules] evaluate is false: nothing is judged")
        zone = zoneinfo.ZoneInfo(postgres.timezone)
        config = rules.config()
        total = Evaluation()
        replaced = 0
        with postgres.connect() as conn:
            for key in context.partition_keys:
                day = dt.date.fromisoformat(key)
                lo = dt.datetime.combine(day, dt.time(), zone)
                hi = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
                replaced += forget_day(conn, lo, hi)
                if not rules.evaluate:
                    continue
                one = evaluate_range(conn, lo, hi, config)
                context.log.info(
                    f"{key}: {one.judged} rows judged ({one.rows} read), "
                    f"{len(one.recorded.opened)} incidents opened"
                )
                total.add(one)
            metadata = incidents_metadata(conn, total)
        return dg.MaterializeResult(metadata={**metadata, "replaced": replaced})

    return incidents


@dg.asset_check(asset="incidents", blocking=False)
def incidents_consistent(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every incident is whole: open ones have no end, closed ones an end after their last
    sighting, each has evidence and a peak over its limit, and each was announced (its
    `opened` change is in the outbox)."""
    with postgres.connect() as conn:
        bad = conn.execute(
            """
            SELECT i.id, i.rule, i.subject FROM incidents i
            WHERE (i.state = 'open') <> (i.closed_at IS NULL)
               OR i.closed_at < i.last_seen
               OR i.peak <= i."limit"
               OR jsonb_array_length(i.evidence) = 0
               OR NOT EXISTS (SELECT 1 FROM incident_changes c
                              WHERE c.incident_id = i.id AND c.change = 'opened')
            ORDER BY i.id LIMIT 20
            """
        ).fetchall()
        total = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
    return dg.AssetCheckResult(
        passed=not bad,
        description=None if not bad else f"{len(bad)} incident(s) are not whole: {bad[:5]}",
        metadata={"incidents": total, "not_whole": len(bad)},
    )


@dg.asset_check(asset="incidents", blocking=False)
def incidents_alerts_delivered(postgres: PostgresResource) -> dg.AssetCheckResult:
    """No notification is in the dead letter (a target that failed [alerts] attempts times:
    `xray-pipeline alerts list --dead` shows why, `alerts retry` sends them again)."""
    with postgres.connect() as conn:
        counts = dict(
            conn.execute("SELECT status, count(*) FROM alert_deliveries GROUP BY status").fetchall()
        )
    dead = counts.get("dead", 0)
    return dg.AssetCheckResult(
        passed=dead == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if not dead else f"{dead} notification(s) in the dead letter",
        metadata={status: counts.get(status, 0) for status in ("sent", "pending", "dead", "stale")},
    )


def build_alerts_sensor(interval_seconds: int = 10) -> dg.SensorDefinition:
    @dg.sensor(
        name="incident_alerts_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def incident_alerts_sensor(
        context: dg.SensorEvaluationContext, postgres: PostgresResource, rules: RulesResource
    ) -> dg.SkipReason:
        """Sends the incidents' changes to the [alerts] targets (webhook, Telegram,
        on_open_command), each change once per target: those recorded by any run, and the
        retries after a failure. The tail run sends its own at once; this sensor is the
        backstop. It starts no run."""
        targets = rules.targets()
        if not targets.names:
            return dg.SkipReason("no [alerts] target and no on_open_command is configured")
        with postgres.connect() as conn:
            result = deliver(conn, targets, seconds=40)
        for error in result.errors:
            context.log.warning(error)
        return dg.SkipReason(
            f"sent {result.sent}, failed {result.failed} (to retry), dead {result.dead}, "
            f"stale {result.stale}, held by cooldown {result.held}"
        )

    return incident_alerts_sensor
