"""tail_logs_job: one long-lived run per day that loads each source's new lines as they come.

A run per increment costs a fresh process (Dagster, Polars and the code location imported,
seconds of CPU) and waits in the queue; the tail run pays that once an hour. The sensor starts
it for the current day, keeps it alive (a run whose heartbeat stops is failed and replaced),
and leaves that day's new bytes to it. Each load is reported as a materialization of that
day's `logs` partition, with the metadata of a sensor run.
"""

import datetime as dt
import time
import zoneinfo
from pathlib import Path

import dagster as dg
import psycopg
from loguru import logger

from xray_pipeline.core.alerts.outbox import Sender
from xray_pipeline.core.db.connect import DatabaseError
from xray_pipeline.core.db.partitions import partition_rows
from xray_pipeline.core.ingest.compact import compact_ledger
from xray_pipeline.core.ingest.files import watched_states
from xray_pipeline.core.ingest.follow import follow_pieces
from xray_pipeline.core.ingest.ledger import last_ranges
from xray_pipeline.core.ingest.loader import Loader, RangeLoad
from xray_pipeline.core.rules.evaluate import Candidates, Evaluation
from xray_pipeline.defs.assets import load_metadata
from xray_pipeline.defs.judge import incidents_metadata, judge_load
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource, RulesResource

TAIL_JOB = "tail_logs_job"
DAY_TAG = "xray/day"
HEARTBEAT_TAG = "xray/heartbeat"
HEARTBEAT_EVERY_S = 10
# a started tail run whose heartbeat is older than this has lost its process (killed with
# SIGKILL, or its machine): the sensor fails it and starts another. A tail run stopped by a
# signal says so itself (its run fails at once).
STALE_AFTER_S = 60
# a tail run of a day keeps looking this long after the day ended (lines written just
# before midnight can reach the file just after)
DAY_GRACE_S = 120
# how long to wait before connecting again while PostgreSQL is unreachable
OUTAGE_BACKOFF_S = 5.0
# the evaluations of the rules are reported (a materialization of `incidents`) at once when
# they changed an incident, else summed up over this long
INCIDENTS_REPORT_EVERY_S = 60
# the day's rows (the materializations' row count) are counted again this often
RECOUNT_EVERY_S = 600
# the loads since the last judging are judged together at most this often: a judging costs
# some queries whatever the rows (a large share of the tail run when it ran every poll of 200
# nodes); a breach waits at most this long more for its alert
JUDGE_EVERY_S = 5.0
# the ledger's ranges older than ten minutes are merged this often (core/ingest/compact.py)
COMPACT_EVERY_S = 300


class TailConfig(dg.Config):
    """The local `day` whose lines the run loads, for `minutes`, looking every
    `poll_seconds`."""

    day: str
    minutes: float = 60.0
    poll_seconds: float = 1.0


def day_end(day: dt.date, timezone: str) -> float:
    """The epoch second at which the local `day` ends."""
    midnight = dt.datetime.combine(
        day + dt.timedelta(days=1), dt.time(), zoneinfo.ZoneInfo(timezone)
    )
    return midnight.timestamp()


def heartbeat(run: dg.DagsterRun | None) -> float | None:
    """The epoch second of a tail run's last heartbeat (None: none yet)."""
    if run is None or HEARTBEAT_TAG not in run.tags:
        return None
    return float(run.tags[HEARTBEAT_TAG])


@dg.op(
    name="tail_logs",
    description=(
        "Follows the watched access logs for one local day: every poll_seconds, loads each "
        "source's new complete lines of that day (exactly once, through the ingest ledger) and "
        "reports them as a materialization of that day's `logs` partition; judges them against "
        "the abuse rules (a materialization of `incidents`) and sends the incidents' changes "
        "to the [alerts] targets. Stops after `minutes` or when the day is over; "
        "access_log_sensor starts the next."
    ),
    tags={"kind": "postgres"},
)
def tail_logs(
    context: dg.OpExecutionContext,
    config: TailConfig,
    postgres: PostgresResource,
    log_sources: LogSourcesResource,
    rules: RulesResource,
) -> None:
    day = dt.date.fromisoformat(config.day)
    stop_at = min(time.time() + config.minutes * 60, day_end(day, postgres.timezone) + DAY_GRACE_S)
    log = logger.bind(run_id=context.run_id, day=config.day)
    conn: psycopg.Connection | None = None
    loader: Loader | None = None
    loads = lines = 0
    down_since: float | None = None
    alive = Heartbeat(context)
    day_rows = DayRows(day, postgres.timezone)
    judged = Judged(context, config.day)
    unjudged: list = []  # the loads whose rows the rules have not judged yet
    judged_at = 0.0
    compacted_at = time.monotonic()
    candidates = Candidates(rules.config())
    targets = rules.targets()
    sender = Sender(lambda: postgres.connect(upgrade=False), targets) if targets.names else None
    if sender is not None:
        sender.start()
    try:
        while (now := time.time()) < stop_at and alive():
            try:
                if conn is None or conn.closed:
                    conn = postgres.connect(upgrade=loads == 0 and down_since is None)
                if loader is None:
                    loader = postgres.loader(context.run_id)
                report = _load_new(conn, loader, day, log_sources, alive, day_rows)
                if time.monotonic() - compacted_at >= COMPACT_EVERY_S:
                    compacted_at = time.monotonic()
                    merged = compact_ledger(conn, timezone=postgres.timezone)
                    context.log.info(f"ledger: {merged.removed} rows merged into others")
            except (DatabaseError, psycopg.OperationalError) as exc:
                if down_since is None:
                    down_since = now
                    context.log.warning(f"database unreachable, trying again: {exc}")
                if conn is not None:
                    conn.close()
                if loader is not None:
                    loader.close()
                conn = loader = None
                time.sleep(OUTAGE_BACKOFF_S)
                continue
            if down_since is not None:
                context.log.info(f"database back after {now - down_since:.0f} s")
                down_since = None
            busy = False
            if report is not None:
                metadata, count, loaded = report
                busy = metadata["bytes"] >= BUSY_BYTES
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key="logs", partition=config.day, metadata=metadata
                    )
                )
                unjudged += loaded
                loads += 1
                lines += count
                log.debug("tail load: {} lines", count)
            if unjudged and time.monotonic() - judged_at >= JUDGE_EVERY_S:
                judged_at = time.monotonic()
                unjudged = _judge(context, conn, rules, unjudged, judged, sender, candidates)
            if not busy:  # a backlog (a burst, a node back from an outage): look again now
                time.sleep(max(0.0, config.poll_seconds - (time.time() - now)))
    finally:
        if conn is not None and not conn.closed:
            try:
                if unjudged:
                    _judge(context, conn, rules, unjudged, judged, sender, candidates)
                judged.flush(conn)
            except psycopg.Error as exc:  # the database went away: the report is lost, no row
                context.log.warning(f"the last evaluations were not reported: {exc}")
            conn.close()
        if loader is not None:
            loader.close()
        if sender is not None:
            sender.stop()
    context.log.info(f"{loads} loads, {lines} lines of {config.day}")
    if sender is not None:
        sent = sender.totals
        context.log.info(f"alerts: sent {sent.sent}, failed {sent.failed}, dead {sent.dead}")


def _judge(
    context: dg.OpExecutionContext,
    conn: psycopg.Connection,
    rules: RulesResource,
    loaded: list,
    judged: "Judged",
    sender: Sender | None,
    candidates: Candidates,
) -> list:
    """Judge the rows of `loaded` against the rules; the loads still to judge (all of them
    when the database failed: the next turn judges them with its own)."""
    try:
        evaluation = judge_load(conn, rules, loaded, candidates)
        if evaluation is not None:
            judged.add(conn, evaluation)
    except (DatabaseError, psycopg.OperationalError) as exc:
        context.log.warning(f"the rules were not evaluated, trying again: {exc}")
        conn.close()
        return loaded
    if evaluation is not None and evaluation.changes and sender is not None:
        sender.poke()
    return []


class Judged:
    """The evaluations of the rules since the last report: reported as a materialization of
    the day's `incidents` at once when one changed an incident, else once a minute."""

    def __init__(self, context: dg.OpExecutionContext, day: str) -> None:
        self.context, self.day = context, day
        self.pending = Evaluation()
        self.count = 0
        self.last = time.monotonic()

    def add(self, conn: psycopg.Connection, evaluation: Evaluation) -> None:
        self.pending.add(evaluation)
        self.count += 1
        if evaluation.changes or time.monotonic() - self.last >= INCIDENTS_REPORT_EVERY_S:
            self.flush(conn)

    def flush(self, conn: psycopg.Connection) -> None:
        if not self.count:
            return
        metadata = incidents_metadata(conn, self.pending, self.count)
        self.context.log_event(
            dg.AssetMaterialization(asset_key="incidents", partition=self.day, metadata=metadata)
        )
        self.pending, self.count, self.last = Evaluation(), 0, time.monotonic()


class Heartbeat:
    """Called between loads: every HEARTBEAT_EVERY_S, records that the run is alive (a run
    tag the sensor reads) and says whether it still should be (False once the run is no
    longer STARTED: the sensor failed it, thinking it dead)."""

    def __init__(self, context: dg.OpExecutionContext) -> None:
        self.context = context
        self.last = 0.0
        self.wanted = True

    def __call__(self) -> bool:
        now = time.time()
        if self.wanted and now - self.last >= HEARTBEAT_EVERY_S:
            instance, run_id = self.context.instance, self.context.run_id
            run = instance.get_run_by_id(run_id)
            self.wanted = run is not None and run.status == dg.DagsterRunStatus.STARTED
            if self.wanted:
                instance.add_run_tags(run_id, {HEARTBEAT_TAG: str(int(now))})
            else:
                self.context.log.warning("the run is no longer STARTED: stopping")
            self.last = now
        return self.wanted


class DayRows:
    """The rows of the day's partition, for each load's metadata: counted at the first load
    and every RECOUNT_EVERY_S (other runs may load the day too), in between the count plus
    what this run loaded (a count of a busy day each second would cost more than the load)."""

    def __init__(self, day: dt.date, timezone: str) -> None:
        self.day, self.timezone = day, timezone
        self.rows = 0
        self.counted = -RECOUNT_EVERY_S

    def __call__(self, conn: psycopg.Connection, loaded_rows: int) -> int:
        if time.monotonic() - self.counted >= RECOUNT_EVERY_S:
            self.rows = partition_rows(conn, self.day, self.timezone)
            self.counted = time.monotonic()
        else:
            self.rows += loaded_rows
        return self.rows


def _load_new(
    conn: psycopg.Connection,
    loader: Loader,
    day: dt.date,
    log_sources: LogSourcesResource,
    alive: Heartbeat,
    day_rows: DayRows,
) -> tuple[dict, int, list] | None:
    """Load the day's new lines of every source, `loader.workers` sources at a time while
    the run is `alive` (a backlog can take minutes): (metadata, lines, the loads' stats), or
    None when none came. The sources are listed afresh each time: a node's first range, a new landed
    segment, a glob's new file."""
    node_of = dict(log_sources.entries())
    files = list(dict.fromkeys(node_of))
    # a node's landed segments are never rotated: no siblings to look for (a folder listing
    # per node and poll)
    root = Path(log_sources.landing_dir) if log_sources.landing_dir else None
    landed = [f for f in files if root is not None and f.is_relative_to(root)]
    local = [f for f in files if root is None or not f.is_relative_to(root)]
    states = watched_states(local, with_complete_end=True) + watched_states(
        landed, include_siblings=False, with_complete_end=True
    )
    loaded = last_ranges(conn, [s.identity.key for s in states])
    conn.commit()
    pieces, _ = follow_pieces(files, states, loaded, day, max_bytes=log_sources.max_run_bytes)
    if not pieces:
        return None
    stats = []
    for batch in _batches(pieces, loader.workers):
        if stats and not alive():
            pieces = pieces[: len(stats)]
            break
        stats += loader.load(
            [
                RangeLoad(
                    p.request.path,
                    p.request.identity,
                    p.request.start,
                    p.request.end,
                    node=node_of.get(p.watched) or log_sources.node,
                    watched=p.watched,
                )
                for p in batch
            ]
        )
    spans = [(p.request.identity, p.request.start, p.request.end) for p in pieces]
    nodes = [node_of.get(p.watched) or log_sources.node for p in pieces]
    rows = day_rows(conn, sum(s.access_rows for s in stats))
    return load_metadata(stats, spans, nodes, rows), sum(s.lines for s in stats), stats


# a load at least this large means more is arriving than a poll a second keeps up with
BUSY_BYTES = 1024 * 1024
# a batch of loads between two heartbeats: at least a worker's piece each, and as many pieces
# (a fleet's second of lines, a burst of many nodes) as add up to this: seconds of loading,
# far from STALE_AFTER_S, with no worker idle while another ends the batch
BATCH_BYTES = 64 * 1024 * 1024


def _batches(pieces: list, workers: int) -> list[list]:
    """The pieces in batches of at least `workers` of them or BATCH_BYTES, in order."""
    batches, batch, size = [], [], 0
    for piece in pieces:
        batch.append(piece)
        size += piece.request.end - piece.request.start
        if len(batch) >= workers and size >= BATCH_BYTES:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    return batches


def build_tail_job() -> dg.JobDefinition:
    @dg.job(
        name=TAIL_JOB,
        executor_def=dg.in_process_executor,
        description=(
            "Follow the current day's access logs in one long-lived run (started and kept "
            "alive by access_log_sensor)."
        ),
    )
    def tail_logs_job():
        tail_logs()

    return tail_logs_job
