"""access_log_sensor: new bytes in the watched files -> one run per day and byte range."""

import json
import time
from pathlib import Path

import dagster as dg

from xray_pipeline.core.ledger import committed_ranges
from xray_pipeline.core.pg import DatabaseError
from xray_pipeline.core.plan import (
    PlannedRange,
    hole_run_key,
    plan_requests,
    split_range,
)
from xray_pipeline.core.tail import unreadable_reason, watched_states
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource

# a sensor run still going after this is marked failed by run monitoring (dagster.yaml)
RUN_MAX_RUNTIME_S = 10 * 60
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _active_ranges(instance: dg.DagsterInstance, identity: str) -> list[tuple[int, int]]:
    """The byte ranges of the queued and running runs of a source."""
    runs = instance.get_runs(dg.RunsFilter(tags={"xray/identity": identity}, statuses=_ACTIVE))
    found = []
    for run in runs:
        start, _, end = run.tags.get("xray/range", "").partition("-")
        if start.isdigit() and end.isdigit():
            found.append((int(start), int(end)))
    return found


def _run_request(
    planned: PlannedRange, request, run_key: str, day: str, node: str | None
) -> dg.RunRequest:
    """The run of one day's piece of a planned range."""
    return dg.RunRequest(
        run_key=run_key,
        partition_key=day,
        run_config={
            "ops": {
                "logs": {
                    "config": {
                        "path": str(request.path),
                        "identity": request.identity,
                        "start": request.start,
                        "end": request.end,
                        "node": node,
                        "watched": str(planned.watched),
                    }
                }
            }
        },
        tags={
            "xray/source": str(request.path),
            "xray/identity": request.identity,
            "xray/range": f"{request.start}-{request.end}",
            # a range of at most max_run_bytes loads in seconds: a run still going after
            # this is hung or dead, and run monitoring fails it
            "dagster/max_runtime": str(RUN_MAX_RUNTIME_S),
        },
    )


def _skip_reason(files: list[Path], unreadable: dict[Path, str], in_flight: bool) -> str:
    reason = "no new complete lines" + ("; runs in flight" if in_flight else "")
    if missing := [str(p) for p in files if p not in unreadable and not p.exists()]:
        reason += f"; not found: {', '.join(missing)}"
    if unreadable:
        reason += "; cannot read: " + "; ".join(unreadable.values())
    return reason


def _hole_key(context: dg.SensorEvaluationContext, piece, cursor: dict) -> str | None:
    """The run key for a piece of a hole (see hole_run_key), warning once every
    STALE_AFTER_S (kept in the cursor) when it is given up on."""
    instance = context.instance

    def used(key: str) -> bool:
        return bool(instance.get_runs_count(dg.RunsFilter(tags={"dagster/run_key": key})))

    active = _active_ranges(instance, piece.identity)
    key, why = hole_run_key(piece.key, piece.start, piece.end, active, used)
    if why and (said := f"hole:{piece.key}") not in cursor:
        context.log.warning(f"{piece.path}: {why}")
        cursor[said] = {"end": 0, "at": time.time()}
    return key


def _run_requests(
    context: dg.SensorEvaluationContext,
    planned: list[PlannedRange],
    cursor: dict,
    log_sources: LogSourcesResource,
    partitions_def: dg.DailyPartitionsDefinition,
) -> list[dg.RunRequest]:
    """One run per day and size-capped piece of each planned range."""
    first_day = partitions_def.start.date().isoformat()
    today = partitions_def.get_last_partition_key()
    node_of = dict(log_sources.entries())
    requests = []
    for item in planned:
        pieces = split_range(
            item.path, item.identity, item.start, item.end, max_bytes=log_sources.max_run_bytes
        )
        for piece in pieces:
            run_key = _hole_key(context, piece, cursor) if item.hole else piece.key + item.suffix
            if run_key is None:
                continue
            day = max(piece.day.isoformat() if piece.day else today, first_day)
            requests.append(_run_request(item, piece, run_key, day, node_of.get(item.watched)))
    return requests


def build_access_log_sensor(
    job,  # the unresolved asset job of build_load_logs_job
    partitions_def: dg.DailyPartitionsDefinition,
    interval_seconds: int,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="access_log_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Watches the configured access logs (and their still-growing rotated copies) and "
            "requests one `logs` run per day and byte range of new complete lines."
        ),
    )
    def access_log_sensor(
        context: dg.SensorEvaluationContext,
        postgres: PostgresResource,
        log_sources: LogSourcesResource,
    ) -> dg.SensorResult | dg.SkipReason:
        files = log_sources.files()
        if not files:
            return dg.SkipReason(
                "no log file configured: set [parser] logfile in config.ini or XRAY_PARSER_LOGFILE"
            )
        states = watched_states(files, with_complete_end=True)
        try:
            with postgres.connect(timeout=3) as conn:
                loaded = committed_ranges(conn, [s.identity.key for s in states])
        except DatabaseError as exc:
            return dg.SkipReason(f"database unreachable: {exc}")
        cursor = json.loads(context.cursor) if context.cursor else {}
        planned, cursor, notes = plan_requests(files, states, loaded, cursor, now=time.time())
        unreadable = {p: r for p in files if (r := unreadable_reason(p))}
        for note in notes:
            context.log.warning(note)
        for why in unreadable.values():
            context.log.error(why)
        requests = _run_requests(context, planned, cursor, log_sources, partitions_def)
        if not requests:
            skip = _skip_reason(files, unreadable, in_flight=bool(planned))
            return dg.SensorResult(skip_reason=skip, cursor=json.dumps(cursor))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return access_log_sensor
