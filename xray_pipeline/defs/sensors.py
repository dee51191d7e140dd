"""access_log_sensor: new bytes in the watched files -> one run per day and byte range."""

import json
import time
from pathlib import Path

import dagster as dg

from xray_pipeline.core.ingest import (
    committed_ranges,
    complete_end,
    file_state,
    plan_reads,
    rotated_siblings,
    unreadable_reason,
)
from xray_pipeline.core.pg import DatabaseError
from xray_pipeline.core.plan import split_range
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource

# a requested range that the ledger still lacks after this long is requested again
STALE_AFTER_S = 15 * 60
# a sensor run still going after this is marked failed by run monitoring (dagster.yaml)
RUN_MAX_RUNTIME_S = 10 * 60


def plan_requests(
    files: list[Path],
    loaded: dict[str, list[tuple[int, int]]],
    cursor: dict,
    *,
    max_bytes: int,
    now: float,
) -> tuple[list[dict], dict, list[str]]:
    """Pure: (run request specs, new cursor, notes) from the files, the ledger and the cursor.

    The cursor remembers, per source identity, how far runs were requested, so that a range
    in flight is not requested again before its run commits it to the ledger.
    """
    candidates: list[Path] = []
    base_of: dict[Path, Path] = {}
    for path in files:
        candidates.append(path)
        base_of.setdefault(path, path)
        for sibling in rotated_siblings(path):
            candidates.append(sibling)
            base_of.setdefault(sibling, path)
    states = [s for s in (file_state(p) for p in dict.fromkeys(candidates)) if s is not None]
    tasks, notes = plan_reads(
        [s for s in states if s.identity.key in loaded or s.path in set(files)]
        + [s for s in states if s.identity.key not in loaded and s.path not in set(files)],
        loaded,
        explicit=set(files),
    )
    new_cursor = {k: v for k, v in cursor.items() if now - v.get("at", 0) < STALE_AFTER_S}
    specs: list[dict] = []
    for state in states:  # bytes below the last loaded one that the ledger lacks
        if state.compressed:
            continue
        for lo, hi in ledger_holes(loaded.get(state.identity.key, [])):
            if hi > state.size:  # truncated in place since: those bytes are gone
                continue
            for request in split_range(state.path, state.identity.key, lo, hi, max_bytes=max_bytes):
                specs.append(_spec(request, base_of.get(state.path, state.path), "", hole=True))
    for task in tasks:
        if task.compressed or task.end is None:
            continue
        loaded_end = max((e for _, e in loaded.get(task.identity, [])), default=0)
        entry = new_cursor.get(task.identity)
        start = task.start
        retry = 0
        if entry is not None:
            if entry["end"] > start and start >= loaded_end:
                start = entry["end"]
            retry = entry.get("retry", 0)
        elif cursor.get(task.identity, {}).get("end", 0) > loaded_end:
            retry = cursor[task.identity].get("retry", 0) + 1  # a stale request: try again
        end = complete_end(task.path, task.end)
        if end <= start:
            continue
        for request in split_range(task.path, task.identity, start, end, max_bytes=max_bytes):
            specs.append(
                _spec(
                    request,
                    base_of.get(task.path, task.path),
                    f"#retry{retry}" if retry else "",
                )
            )
        new_cursor[task.identity] = {"end": end, "at": now, "retry": retry}
    return specs, new_cursor, notes


def _spec(request, watched: Path, suffix: str, *, hole: bool = False) -> dict:
    return {
        "path": str(request.path),
        "identity": request.identity,
        "start": request.start,
        "end": request.end,
        "day": request.day.isoformat() if request.day else None,
        "watched": str(watched),
        "run_key": request.key + suffix,
        "hole": hole,
    }


def ledger_holes(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The byte ranges before the last loaded byte that no loaded range covers: what a run
    that failed (the database went away, the process was killed) left behind while later
    ranges loaded."""
    holes: list[tuple[int, int]] = []
    covered = 0
    for start, end in sorted(ranges):
        if start > covered:
            holes.append((covered, start))
        covered = max(covered, end)
    return holes


# runs of a hole's range before the sensor stops requesting it and says so
MAX_HOLE_ATTEMPTS = 5
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _hole_run_key(instance: dg.DagsterInstance, spec: dict) -> tuple[str | None, str | None]:
    """(the run key to request a hole's range with, None); or (None, None) while a queued or
    running run of the source covers part of it (a run commits chunk by chunk: a hole trails
    it until it ends); or (None, why) once MAX_HOLE_ATTEMPTS runs of the range ended and the
    ledger still lacks it."""
    lo, hi = spec["start"], spec["end"]
    active = instance.get_runs(
        dg.RunsFilter(tags={"xray/identity": spec["identity"]}, statuses=_ACTIVE)
    )
    for run in active:
        start, _, end = run.tags.get("xray/range", "").partition("-")
        if start.isdigit() and end.isdigit() and int(start) < hi and lo < int(end):
            return None, None
    # the range's own key first (if a run of it exists, from before it failed, Dagster would
    # skip a new request of that key), then one more key per attempt
    keys = [spec["run_key"], *(f"{spec['run_key']}#hole{n}" for n in range(1, MAX_HOLE_ATTEMPTS))]
    for key in keys:
        if not instance.get_runs_count(dg.RunsFilter(tags={"dagster/run_key": key})):
            return key, None
    return None, (
        f"{spec['path']}: bytes {lo}-{hi} are still not loaded after {len(keys)} runs; see "
        "those runs' errors, then `xray-pipeline ingest --from-start` loads them by hand"
    )


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
        try:
            with postgres.connect(timeout=3) as conn:
                states = [s for s in (file_state(p) for p in files) if s is not None]
                keys = [s.identity.key for s in states]
                for path in files:
                    keys.extend(
                        s.identity.key
                        for s in (file_state(p) for p in rotated_siblings(path))
                        if s is not None
                    )
                loaded = committed_ranges(conn, keys)
        except DatabaseError as exc:
            return dg.SkipReason(f"database unreachable: {exc}")
        cursor = json.loads(context.cursor) if context.cursor else {}
        node_of = {str(path): node for path, node in log_sources.entries()}
        specs, new_cursor, notes = plan_requests(
            files, loaded, cursor, max_bytes=log_sources.max_run_bytes, now=time.time()
        )
        for note in notes:
            context.log.warning(note)
        unreadable = {p: r for p in files if (r := unreadable_reason(p))}
        for why in unreadable.values():
            context.log.error(why)
        if not specs:
            missing = [str(p) for p in files if p not in unreadable and not p.exists()]
            reason = "no new complete lines"
            if missing:
                reason += f"; not found: {', '.join(missing)}"
            if unreadable:
                reason += "; cannot read: " + "; ".join(unreadable.values())
            return dg.SensorResult(skip_reason=reason, cursor=json.dumps(new_cursor))
        first_day = partitions_def.start.date()
        today = partitions_def.get_last_partition_key()
        requests = []
        for spec in specs:
            if spec["hole"]:
                key, why = _hole_run_key(context.instance, spec)
                said = f"hole:{spec['run_key']}"  # said at most every STALE_AFTER_S
                if why and said not in new_cursor:
                    context.log.warning(why)
                    new_cursor[said] = {"end": 0, "at": time.time()}
                if key is None:
                    continue
                spec = {**spec, "run_key": key}
            day = spec["day"] or today
            if day < first_day.isoformat():
                day = first_day.isoformat()
            requests.append(
                dg.RunRequest(
                    run_key=spec["run_key"],
                    partition_key=day,
                    run_config={
                        "ops": {
                            "logs": {
                                "config": {
                                    **{k: spec[k] for k in ("path", "identity", "start", "end")},
                                    "node": node_of.get(spec["watched"]),
                                    "watched": spec["watched"],
                                }
                            }
                        }
                    },
                    tags={
                        "xray/source": spec["path"],
                        "xray/identity": spec["identity"],
                        "xray/range": f"{spec['start']}-{spec['end']}",
                        # a range of at most max_run_bytes loads in seconds: a run still
                        # going after this is hung or dead, and run monitoring fails it
                        "dagster/max_runtime": str(RUN_MAX_RUNTIME_S),
                    },
                )
            )
        if not requests:  # only holes that runs in flight may still fill
            return dg.SensorResult(
                skip_reason="no new complete lines; runs in flight", cursor=json.dumps(new_cursor)
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(new_cursor))

    return access_log_sensor
