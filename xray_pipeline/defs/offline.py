"""The offline buffer in Dagster: replay spooled segments once PostgreSQL answers again."""

import dagster as dg

from xray_pipeline.core.db.connect import DatabaseError
from xray_pipeline.core.ingest.offline import oldest_age, replay, segments
from xray_pipeline.defs.judge import judge_load
from xray_pipeline.defs.resources import OfflineSpoolResource, PostgresResource, RulesResource


@dg.asset(
    name="offline_buffer",
    group_name="ingest",
    kinds={"postgres"},
    deps=["logs"],
    description=(
        "Segments spooled while PostgreSQL was down, replayed in order through the loader "
        "(exactly once: the ledger skips what was loaded meanwhile); a segment is deleted only "
        "after its transaction committed, a damaged one is kept aside."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            name="offline_buffer_not_stale",
            asset="offline_buffer",
            description="No spooled segment waits longer than the configured age.",
        )
    ],
)
def offline_buffer(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    offline_spool: OfflineSpoolResource,
    rules: RulesResource,
) -> dg.MaterializeResult:
    spool = offline_spool.folder()
    age_before = oldest_age(spool)
    replayed = lines = damaged = 0
    loaded: list = []
    with postgres.connect() as conn:
        for segment, results, bad in replay(
            conn, spool, run_id=context.run.run_id, policy=postgres.policy()
        ):
            if bad:
                damaged += 1
                context.log.warning(f"{segment.path.name} is damaged: kept in {spool}/corrupt")
                continue
            replayed += 1
            lines += sum(r.lines for r in results)
            loaded += results
        evaluation = judge_load(conn, rules, loaded)  # replayed rows are judged like any
        if evaluation is not None:
            context.log.info(f"rules: {len(evaluation.recorded.opened)} incident(s) opened")
    age_after = oldest_age(spool)
    limit = offline_spool.max_age_minutes * 60
    return dg.MaterializeResult(
        metadata={
            "segments_replayed": replayed,
            "lines_loaded": lines,
            "segments_damaged": damaged,
            "oldest_segment_age_s": age_before,
            "segments_waiting": len(segments(spool)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="offline_buffer_not_stale",
                passed=age_after is None or age_after <= limit,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"oldest_waiting_age_s": age_after, "limit_s": limit},
            )
        ],
    )


def build_offline_buffer_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        name="offline_buffer_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a replay when segments wait in the spool and PostgreSQL answers.",
    )
    def offline_buffer_sensor(
        context: dg.SensorEvaluationContext,
        postgres: PostgresResource,
        offline_spool: OfflineSpoolResource,
    ) -> dg.SensorResult | dg.SkipReason:
        waiting = segments(offline_spool.folder())
        if not waiting:
            return dg.SkipReason("the offline spool is empty")
        try:
            with postgres.connect(timeout=3, upgrade=False) as conn:
                conn.execute("SELECT 1")
        except DatabaseError as exc:
            return dg.SkipReason(f"{len(waiting)} segment(s) wait; database unreachable: {exc}")
        return dg.RunRequest(run_key=f"replay-{waiting[-1].path.name}")

    return offline_buffer_sensor


def build_replay_job():
    """replay_offline_buffer_job: the offline_buffer asset, in process."""
    return dg.define_asset_job(
        name="replay_offline_buffer_job",
        selection=dg.AssetSelection.assets("offline_buffer"),
        executor_def=dg.in_process_executor,
        description="Replay the segments of the offline spool.",
    )
