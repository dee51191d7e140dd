"""access_log_sensor: new bytes in the watched files -> a tail run for the current day, and one
run per older day partition at a time."""

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from xray_pipeline.core.db.connect import DatabaseError
from xray_pipeline.core.ingest.files import unreadable_reason, watched_states
from xray_pipeline.core.ingest.ledger import committed_ranges
from xray_pipeline.core.ingest.plan import (
    Piece,
    PlannedRange,
    batch_pieces,
    hole_run_key,
    plan_requests,
    rewind_cursor,
    split_range,
)
from xray_pipeline.core.ingest.tailing import TailRun, decide_tail
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource
from xray_pipeline.defs.tail import DAY_TAG, STALE_AFTER_S, TAIL_JOB, heartbeat

NO_FILES = (
    "no log file configured (set [parser] logfile in config.ini or XRAY_PARSER_LOGFILE) and no "
    "node has shipped any (xray-pipeline nodes add)"
)
# a sensor run still going after this is marked failed by run monitoring (dagster.yaml)
RUN_MAX_RUNTIME_S = 10 * 60
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# a partition with a run in these states gets no new run: that run has not read its ranges yet
_WAITING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]


def run_ranges(run: dg.DagsterRun) -> list[dict]:
    """The byte ranges a run of `logs` loads (its run config)."""
    config = run.run_config.get("ops", {}).get("logs", {}).get("config", {})
    return list(config.get("ranges") or [])


def _active_ranges(instance: dg.DagsterInstance, identity: str, job: str) -> list[tuple[int, int]]:
    """The byte ranges of a source in the queued and running runs."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job, statuses=_ACTIVE))
    return [
        (r["start"], r["end"]) for run in runs for r in run_ranges(run) if r["identity"] == identity
    ]


def _busy_partitions(instance: dg.DagsterInstance, job: str) -> set[str]:
    runs = instance.get_runs(dg.RunsFilter(job_name=job, statuses=_WAITING))
    return {run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags}


def _range_config(piece: Piece, node: str | None) -> dict:
    request = piece.request
    return {
        "path": str(request.path),
        "identity": request.identity,
        "start": request.start,
        "end": request.end,
        "node": node,
        "watched": str(piece.item.watched),
    }


def _run_request(
    pieces: list[Piece], run_key: str, node_of: dict[Path, str | None]
) -> dg.RunRequest:
    """The run of a day's batch of pieces (or of one piece of a hole)."""
    return dg.RunRequest(
        run_key=run_key,
        job_name="load_logs_job",
        partition_key=pieces[0].partition,
        run_config={
            "ops": {
                "logs": {
                    "config": {
                        "ranges": [_range_config(p, node_of.get(p.item.watched)) for p in pieces]
                    }
                }
            }
        },
        tags={
            "xray/sources": str(len({p.request.identity for p in pieces})),
            "xray/nodes": _names(node_of.get(p.item.watched) for p in pieces),
            "xray/bytes": str(sum(p.size for p in pieces)),
            # at most max_run_bytes load in seconds: a run still going after this is hung or
            # dead, and run monitoring fails it
            "dagster/max_runtime": str(RUN_MAX_RUNTIME_S),
        },
    )


def batch_key(pieces: list[Piece]) -> str:
    """The run key of a batch: its pieces, in order (the same batch, the same key)."""
    keys = "|".join(p.request.key + p.item.suffix for p in pieces)
    if len(pieces) == 1:
        return keys
    return (
        f"batch:{pieces[0].partition}:" + hashlib.blake2b(keys.encode(), digest_size=12).hexdigest()
    )


def _report(context: dg.SensorEvaluationContext, files: list[Path], notes: list[str]) -> dict:
    """Log the planner's notes and the files that cannot be read; returns the latter."""
    unreadable = {p: r for p in files if (r := unreadable_reason(p))}
    for note in notes:
        context.log.warning(note)
    for why in unreadable.values():
        context.log.error(why)
    return unreadable


def _skip_reason(files: list[Path], unreadable: dict[Path, str], in_flight: bool) -> str:
    reason = "no new complete lines" + ("; runs in flight" if in_flight else "")
    if missing := [str(p) for p in files if p not in unreadable and not p.exists()]:
        reason += f"; not found: {', '.join(missing)}"
    if unreadable:
        reason += "; cannot read: " + "; ".join(unreadable.values())
    return reason


def _hole_key(context: dg.SensorEvaluationContext, piece, cursor: dict, job: str) -> str | None:
    """The run key for a piece of a hole (see hole_run_key), warning once every
    STALE_AFTER_S (kept in the cursor) when it is given up on."""
    instance = context.instance

    def used(key: str) -> bool:
        return bool(instance.get_runs_count(dg.RunsFilter(tags={"dagster/run_key": key})))

    active = _active_ranges(instance, piece.identity, job)
    key, why = hole_run_key(piece.key, piece.start, piece.end, active, used)
    if why and (said := f"hole:{piece.key}") not in cursor:
        context.log.warning(f"{piece.path}: {why}")
        cursor[said] = {"end": 0, "at": time.time()}
    return key


@dataclass(frozen=True)
class Tailing:
    """How the sensor hands the current day to tail runs: for `minutes` each, looking every
    `poll_seconds` (minutes 0: no tail runs)."""

    minutes: int
    poll_seconds: float


def _tail_runs(instance: dg.DagsterInstance) -> list[TailRun]:
    """The active tail runs, with their last sign of life."""
    runs = []
    for record in instance.get_run_records(dg.RunsFilter(job_name=TAIL_JOB, statuses=_ACTIVE)):
        run = record.dagster_run
        beat = heartbeat(run) or record.start_time or record.create_timestamp.timestamp()
        started = run.status == dg.DagsterRunStatus.STARTED
        runs.append(TailRun(run.run_id, run.tags.get(DAY_TAG, ""), started, beat))
    return runs


def _tail_failed_lately(context: dg.SensorEvaluationContext, day: str, now: float) -> bool:
    """A tail run of `day` ended in failure (or was canceled) in the last minute: meanwhile
    the day's bytes go to sensor runs, rather than to tail runs started in a loop."""
    ended = context.instance.get_run_records(
        dg.RunsFilter(
            job_name=TAIL_JOB,
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            tags={DAY_TAG: day},
            updated_after=dt.datetime.fromtimestamp(now - 60, dt.UTC),
        ),
        limit=1,
    )
    return bool(ended)


def _tail_request(day: str, tailing: Tailing, now: float) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"tail:{day}:{int(now)}",
        job_name=TAIL_JOB,
        run_config={
            "ops": {
                "tail_logs": {
                    "config": {
                        "day": day,
                        "minutes": tailing.minutes,
                        "poll_seconds": tailing.poll_seconds,
                    }
                }
            }
        },
        tags={
            DAY_TAG: day,
            "dagster/max_runtime": str(tailing.minutes * 60 + RUN_MAX_RUNTIME_S),
        },
    )


def _names(nodes, most: int = 8) -> str:
    """The nodes of a run, for its tag: a few names, then how many more."""
    names = sorted({n for n in nodes if n})
    if not names:
        return "-"
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} (+{len(names) - most})"


def _run_requests(
    context: dg.SensorEvaluationContext,
    planned: list[PlannedRange],
    cursor: dict,
    log_sources: LogSourcesResource,
    partitions_def: dg.DailyPartitionsDefinition,
    job: str,
    tailing: Tailing,
) -> tuple[list[dg.RunRequest], dict[str, int], set[str]]:
    """The runs of a tick: one per hole piece, a tail run for the current day when it has
    new bytes and none follows it, and one batch per other day partition that has no run
    waiting to start (batch_pieces); with the pieces deferred and the sources requested."""
    first_day = partitions_def.start.date().isoformat()
    today = partitions_def.get_last_partition_key()
    node_of = dict(log_sources.entries())
    requests, pieces = [], []
    for item in planned:
        cut = split_range(
            item.path, item.identity, item.start, item.end, max_bytes=log_sources.max_run_bytes
        )
        for request in cut:
            day = max(request.day.isoformat() if request.day else today, first_day)
            piece = Piece(item, request, day)
            if not item.hole:
                pieces.append(piece)
            elif run_key := _hole_key(context, request, cursor, job):
                requests.append(_run_request([piece], run_key, node_of))
    busy = _busy_partitions(context.instance, job)
    if tailing.minutes:
        now = time.time()
        decision = decide_tail(
            _tail_runs(context.instance),
            today=today,
            today_has_bytes=any(p.partition == today for p in pieces),
            failed_lately=lambda: _tail_failed_lately(context, today, now),
            now=now,
            stale_after=STALE_AFTER_S,
        )
        for run, why in decision.dead:
            context.log.warning(f"tail run {run.run_id} of {run.day}: {why}")
            context.instance.report_run_failed(context.instance.get_run_by_id(run.run_id), why)
        if decision.start:
            requests.append(_tail_request(today, tailing, now))
        busy |= decision.followed  # a tail run loads them
    batches, deferred = batch_pieces(pieces, busy, log_sources.max_run_bytes)
    for batch in batches:
        requests.append(_run_request(batch, batch_key(batch), node_of))
    requested = {p.request.identity for batch in batches for p in batch}
    return requests, deferred, requested


def build_access_log_sensor(
    job,  # the unresolved asset job of build_load_logs_job
    tail_job: dg.JobDefinition,
    partitions_def: dg.DailyPartitionsDefinition,
    interval_seconds: int,
    tailing: Tailing,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="access_log_sensor",
        jobs=[job, tail_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Watches the configured access logs (and their still-growing rotated copies). The "
            "current day's new lines go to a tail run (tail_logs_job) that it starts and keeps "
            "alive; older days' (and every day's, with [dagster] tail_minutes = 0) to `logs` "
            "runs: one run per day partition at a time, with every source's new bytes of that "
            "day, up to [dagster] max_run_bytes."
        ),
    )
    def access_log_sensor(
        context: dg.SensorEvaluationContext,
        postgres: PostgresResource,
        log_sources: LogSourcesResource,
    ) -> dg.SensorResult | dg.SkipReason:
        files = log_sources.files()
        if not files:
            return dg.SkipReason(NO_FILES)
        states = watched_states(files, with_complete_end=True)
        try:
            with postgres.connect(timeout=3) as conn:
                loaded = committed_ranges(conn, [s.identity.key for s in states])
        except DatabaseError as exc:
            return dg.SkipReason(f"database unreachable: {exc}")
        before = json.loads(context.cursor) if context.cursor else {}
        planned, cursor, notes = plan_requests(files, states, loaded, before, now=time.time())
        unreadable = _report(context, files, notes)
        requests, deferred, requested = _run_requests(
            context, planned, cursor, log_sources, partitions_def, job.name, tailing
        )
        cursor = json.dumps(rewind_cursor(cursor, before, deferred, requested))
        if not requests:
            skip = _skip_reason(files, unreadable, in_flight=bool(planned))
            return dg.SensorResult(skip_reason=skip, cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return access_log_sensor
