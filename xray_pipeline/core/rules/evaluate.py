"""Evaluate the rules over what loads added: the rows of [lo, hi] (a load's time range), with
the rows of the same subjects from `window` before as context, then record the incidents.
It reads only the subjects the new rows touch who could break a rule there (counted in the
database, or by a long run's Candidates), never a scan of history. The windows that end up
to `window` after hi are judged too: a node whose lines arrive late (a backlog after an
outage) adds to windows that the other nodes' rows were judged in already."""

import datetime as dt
import math
import time
from dataclasses import dataclass, field

import polars as pl
import psycopg

from xray_pipeline.core.db.migrations import load_query
from xray_pipeline.core.db.partitions import analyze_between
from xray_pipeline.core.rules.detect import (
    DEFAULTS,
    ROWS_SCHEMA,
    IpLimitRule,
    RejectedRule,
    TaggedRule,
    ip_limit_breaches,
    rejected_breaches,
    tagged_breaches,
)
from xray_pipeline.core.rules.incidents import Recorded, record


@dataclass(frozen=True)
class RulesConfig:
    """The rules in force (None: off) and the quiet period that closes an incident."""

    ip_limit: IpLimitRule | None = field(default_factory=IpLimitRule)
    tagged: TaggedRule | None = field(default_factory=TaggedRule)
    rejected: RejectedRule | None = field(default_factory=RejectedRule)
    quiet_minutes: int = DEFAULTS.quiet_minutes

    @classmethod
    def from_settings(cls, settings) -> "RulesConfig":
        """The rules of [rules]."""
        return cls.of(settings.rules)

    @classmethod
    def of(cls, rules) -> "RulesConfig":
        """The rules of anything with [rules]' names (the section, or the Dagster resource)."""
        return cls(
            ip_limit=IpLimitRule(rules.ip_limit, rules.ip_window_minutes, rules.ip_count_by),
            tagged=TaggedRule(
                tuple(rules.watched_tags), rules.tagged_limit, rules.tagged_window_minutes
            ),
            rejected=RejectedRule(rules.rejected_limit, rules.rejected_window_minutes),
            quiet_minutes=rules.quiet_minutes,
        )

    @property
    def window(self) -> dt.timedelta:
        minutes = [r.window_minutes for r in (self.ip_limit, self.tagged, self.rejected) if r]
        return dt.timedelta(minutes=max(minutes, default=0))


_USER_CANDIDATES = load_query("rule_user_candidates")
_USER_ROWS = load_query("rule_user_rows")
_NEW_SOURCES = load_query("rule_new_sources")
_REJECTED_ROWS = load_query("rule_rejected_rows")


def _frame(conn: psycopg.Connection, query: str, params: dict) -> pl.DataFrame:
    """The rows of `query` (its columns named as ROWS_SCHEMA's) as a frame, read as CSV by
    COPY: a frame of tens of thousands of rows is built in Polars, not a tuple at a time."""
    text = psycopg.ClientCursor(conn).mogrify(query, params)
    wrapped = (
        f"COPY (SELECT (extract(epoch FROM q.ts) * 1000000)::int8, {_COLUMNS} "
        f"FROM ({text}) q) TO STDOUT (FORMAT csv)"
    )
    data = bytearray()
    with conn.cursor().copy(wrapped) as copy:
        for block in copy:
            data += block
    if not data:
        return _EMPTY
    frame = pl.read_csv(bytes(data), has_header=False, schema=_CSV_SCHEMA)
    return frame.with_columns(pl.from_epoch("ts", "us").dt.replace_time_zone("UTC"))


_COLUMNS = ", ".join(f'q."{name}"' for name in list(ROWS_SCHEMA)[1:])
_CSV_SCHEMA = {**ROWS_SCHEMA, "ts": pl.Int64}


def _tag_ids(conn: psycopg.Connection, names: tuple[str, ...]) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM tags WHERE name = ANY(%s)", (list(names),))]


def user_limits(conn: psycopg.Connection) -> dict[str, int]:
    """The per-user IP limits (`limits set`)."""
    rows = conn.execute(
        "SELECT u.email, l.ip_limit FROM user_limits l JOIN users u ON u.id = l.user_id"
    ).fetchall()
    return dict(rows)


class LimitError(ValueError):
    """A per-user limit that cannot be set: the message says why."""


def set_user_limit(conn: psycopg.Connection, email: str, limit: int | None) -> None:
    """Set (or, with None, clear) one user's IP limit; the user must have been seen."""
    row = conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()
    if row is None:
        raise LimitError(f"no user {email!r} in the logs yet (`xray-pipeline export` shows one)")
    if limit is None:
        conn.execute("DELETE FROM user_limits WHERE user_id = %s", (row[0],))
    elif limit < 1:
        raise LimitError("a limit is a number of sources, 1 or more")
    else:
        conn.execute(
            "INSERT INTO user_limits (user_id, ip_limit) VALUES (%s, %s) ON CONFLICT (user_id) "
            "DO UPDATE SET ip_limit = EXCLUDED.ip_limit, updated_at = now()",
            (row[0], limit),
        )
    conn.commit()


@dataclass
class Evaluation:
    """One evaluation: the rows judged (those of its range), the rows read (of the
    candidates, with their windows), the time it took, what it recorded."""

    judged: int = 0
    rows: int = 0
    seconds: float = 0.0
    recorded: Recorded = field(default_factory=Recorded)

    @property
    def changes(self) -> int:
        r = self.recorded
        return len(r.opened) + len(r.escalated) + len(r.closed)

    def add(self, other: "Evaluation") -> None:
        """Sum `other` into this one (the evaluations of a run, or of a day's steps)."""
        self.judged += other.judged
        self.rows += other.rows
        self.seconds += other.seconds
        for name in ("opened", "updated", "escalated", "closed"):
            getattr(self.recorded, name).extend(getattr(other.recorded, name))


def _params(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime, config: RulesConfig):
    return {
        "lo": lo,
        "hi": hi,
        "from": lo - config.window,
        "to": hi + config.window,
        "ip_limit": config.ip_limit.limit if config.ip_limit else None,
        "tagged_limit": config.tagged.limit if config.tagged else None,
        "tag_ids": _tag_ids(conn, config.tagged.tags) if config.tagged else [],
        "rejected_limit": config.rejected.limit if config.rejected else None,
    }


def evaluate(
    conn: psycopg.Connection,
    lo: dt.datetime,
    hi: dt.datetime,
    config: RulesConfig,
    candidates: "Candidates | None" = None,
) -> Evaluation:
    """The rules over the rows of [lo, hi] (with `config.window` of context before), the
    breaches recorded as incidents; the newest row's time is the clock that closes quiet
    incidents. The users to judge are found by a count over the window in the database, or,
    in a long run, by its `candidates` (which read only the new rows)."""
    clock = time.perf_counter()
    lo, hi = lo.astimezone(dt.UTC), hi.astimezone(dt.UTC)  # any zone in, Polars' UTC out
    params = _params(conn, lo, hi, config)
    breaches = []
    rows = 0
    judged = None
    if config.ip_limit or config.tagged:
        users = candidates.users(conn, params) if candidates is not None else None
        if users is None:
            found = conn.execute(_USER_CANDIDATES, params).fetchall()
            judged = next(n for user, n in found if user is None)
            users = [user for user, _ in found if user is not None]
        frame = _frame(conn, _USER_ROWS, {**params, "users": users}) if users else _EMPTY
        rows += frame.height
        if config.ip_limit:
            breaches += ip_limit_breaches(frame, config.ip_limit, user_limits(conn), since=lo)
        if config.tagged:
            breaches += tagged_breaches(frame, config.tagged, since=lo)
    if config.rejected:
        rejected = _frame(conn, _REJECTED_ROWS, params)
        rows += rejected.height
        breaches += rejected_breaches(rejected, config.rejected, since=lo)
    if judged is None:
        judged = conn.execute(_JUDGED, params).fetchone()[0]
    conn.commit()
    recorded = record(conn, breaches, now=hi, quiet_minutes=config.quiet_minutes)
    return Evaluation(judged, rows, round(time.perf_counter() - clock, 4), recorded)


_EMPTY = pl.DataFrame(schema=ROWS_SCHEMA)
# a load of more rows than this (an import, a backlog) is judged in steps of about as many rows,
# so that memory follows a step's rows, not the load's (the rows read are the candidates' with
# their windows: a few hundred MB of frames at most); a step is never shorter than STEP, the
# step of a backfill of the incidents (episodes apart by more than quiet_minutes stay apart)
ROWS_AT_ONCE = 250_000
STEP = dt.timedelta(minutes=15)
_JUDGED = "SELECT count(*) FROM logs WHERE ts >= %(lo)s AND ts <= %(hi)s"


class Candidates:
    """The users to judge, for the evaluations of one long run (the tail run): it keeps, per
    user, when each source was last seen, and reads only the new rows of each evaluation,
    where a count over the window would read every row of the window again. A user is a
    candidate when the new rows touch them and the sources seen since the window's start
    outnumber their limit (an upper bound: a source seen since is not always in the window),
    or when their new rows go to a watched tag. Until its first reading covers a window (or
    for a range before it: a late node's backlog) it answers None: count in the database."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self.seen: dict[int, dict[str, dt.datetime]] = {}
        self.covered_from: dt.datetime | None = None
        self.newest: dt.datetime | None = None
        self.pruned = time.monotonic()

    def users(self, conn: psycopg.Connection, params: dict) -> list[int] | None:
        start, hi = params["from"], params["hi"]
        if self.covered_from is None or start < self.covered_from:
            # the first evaluation (or one before the covered time): read the whole window
            self._read(conn, {**params, "lo": start})
            self.covered_from = start
            return None
        new = self._read(conn, params)
        limits = user_limits_by_id(conn)
        default = self.config.ip_limit.limit if self.config.ip_limit else None
        chosen = []
        for user, tagged in new.items():
            if tagged and self.config.tagged:
                chosen.append(user)
                continue
            if default is None:
                continue
            recent = sum(1 for last in self.seen.get(user, {}).values() if last >= start)
            if recent > limits.get(user, default):
                chosen.append(user)
        self._prune(hi - 2 * self.config.window)
        return chosen

    def _read(self, conn: psycopg.Connection, params: dict) -> dict[int, bool]:
        """Take in the sources of [lo, hi]: {user: whether their rows there are tagged}."""
        touched: dict[int, bool] = {}
        for user, source, last_seen, tagged in conn.execute(_NEW_SOURCES, params):
            touched[user] = touched.get(user, False) or bool(tagged)
            if source is not None:
                sources = self.seen.setdefault(user, {})
                if last_seen > sources.get(source, last_seen - dt.timedelta(1)):
                    sources[source] = last_seen
            self.newest = max(self.newest or last_seen, last_seen)
        return touched

    def _prune(self, before: dt.datetime) -> None:
        """Once a minute, forget the sources not seen since `before` (a user with none left
        goes too); the times before it are no longer covered."""
        if time.monotonic() - self.pruned < 60:
            return
        self.pruned = time.monotonic()
        self.covered_from = max(self.covered_from or before, before)
        for user in list(self.seen):
            kept = {s: t for s, t in self.seen[user].items() if t >= before}
            if kept:
                self.seen[user] = kept
            else:
                del self.seen[user]


def user_limits_by_id(conn: psycopg.Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT user_id, ip_limit FROM user_limits").fetchall())


def evaluate_loaded(
    conn: psycopg.Connection,
    loaded: list,
    config: RulesConfig,
    candidates: Candidates | None = None,
    rows_at_once: int = ROWS_AT_ONCE,
) -> Evaluation | None:
    """The rules over the rows that loads added (`loaded`: their LoadResult or RunStats, with
    oldest_ts, newest_ts and access_rows); None when they added no access row. More than
    `rows_at_once` rows are judged in steps of about as many."""
    times = [(x.oldest_ts, x.newest_ts) for x in loaded if x.oldest_ts is not None]
    if not times:
        return None
    lo, hi = min(t[0] for t in times), max(t[1] for t in times)
    rows = sum(getattr(x, "access_rows", 0) for x in loaded)
    steps = -(-rows // rows_at_once)
    if hi - lo <= STEP or steps <= 1:
        return evaluate(conn, lo, hi, config, candidates)
    # an import or a backlog: judged in steps of about ROWS_AT_ONCE rows (of at least STEP),
    # so that what is read at once follows a step's rows, never the whole import's; each
    # step's candidates counted in the database (a long run's Candidates would take in a
    # step's every source in Python)
    step = max(STEP, (hi - lo) / steps)
    clock = time.perf_counter()
    # a bulk load's fresh rows: the plans need the statistics of what the rules filter on
    analyze_between(conn, lo, hi, ("ts", "user_id", "status"))
    total = Evaluation()
    count = max(1, min(steps, math.ceil((hi - lo) / step)))  # not a step of a rounding
    ends = [lo + step * k for k in range(1, count)] + [hi + dt.timedelta(microseconds=1)]
    start = lo
    for end in ends:
        total.add(evaluate(conn, start, end - dt.timedelta(microseconds=1), config))
        start = end
    total.seconds = round(time.perf_counter() - clock, 4)
    return total


def evaluate_range(
    conn: psycopg.Connection,
    lo: dt.datetime,
    hi: dt.datetime,
    config: RulesConfig,
    step: dt.timedelta | None = None,
    candidates: Candidates | None = None,
) -> Evaluation:
    """The rules over [lo, hi) in steps of `step` (STEP), as the loads of a live pipeline
    would have judged them: each step closes the incidents gone quiet before it, so a day's
    separate episodes stay separate incidents; a long run passes its `candidates`."""
    step = step or STEP
    total = Evaluation()
    candidates = candidates or Candidates(config)
    start = lo
    while start < hi:
        end = min(start + step, hi)
        total.add(evaluate(conn, start, end - dt.timedelta(microseconds=1), config, candidates))
        start = end
    return total


def forget_day(conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime) -> int:
    """Delete the incidents opened in [lo, hi) (with their changes and deliveries), before a
    re-evaluation of those days under the rules in force; how many."""
    with conn.transaction():
        deleted = conn.execute(
            "DELETE FROM incidents WHERE opened_at >= %s AND opened_at < %s", (lo, hi)
        )
    return deleted.rowcount
