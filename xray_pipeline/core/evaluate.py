"""Evaluate the rules over what loads added: the rows of [lo, hi] (a load's time range), with
the rows of the same subjects from `window` before as context, then record the incidents.
It reads only the subjects the new rows touch (index on user and time; rejected rows by
status and time), never a scan of history. The windows that end up to `window` after hi are
judged too: a node whose lines arrive late (a backlog after an outage) adds to windows that
the other nodes' rows were judged in already."""

import datetime as dt
import time
from dataclasses import dataclass, field

import polars as pl
import psycopg

from xray_pipeline.core.incidents import Recorded, record
from xray_pipeline.core.rules import (
    ROWS_SCHEMA,
    IpLimitRule,
    RejectedRule,
    TaggedRule,
    ip_limit_breaches,
    rejected_breaches,
    tagged_breaches,
)


@dataclass(frozen=True)
class RulesConfig:
    """The rules in force (None: off) and the quiet period that closes an incident."""

    ip_limit: IpLimitRule | None = field(default_factory=IpLimitRule)
    tagged: TaggedRule | None = field(default_factory=TaggedRule)
    rejected: RejectedRule | None = field(default_factory=RejectedRule)
    quiet_minutes: int = 30

    @classmethod
    def from_settings(cls, settings) -> "RulesConfig":
        """The rules of [rules]."""
        rules = settings.rules
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


_USER_ROWS = """
WITH touched AS (
    SELECT DISTINCT user_id FROM logs WHERE ts >= %(lo)s AND ts <= %(hi)s AND user_id IS NOT NULL
)
SELECT l.ts, u.email, coalesce(host(l.src_ip), l.src_host), s.node, p.country, p.asn,
       t.name, l.status
FROM touched x
JOIN logs l ON l.user_id = x.user_id AND l.ts >= %(from)s AND l.ts <= %(to)s
JOIN users u ON u.id = l.user_id
JOIN sources s ON s.id = l.source_id
LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host)
LEFT JOIN tags t ON t.id = l.outbound_tag_id
"""
_REJECTED_ROWS = """
SELECT l.ts, NULL, coalesce(host(l.src_ip), l.src_host), s.node, p.country, p.asn, NULL,
       l.status
FROM logs l
JOIN sources s ON s.id = l.source_id
LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host)
WHERE l.status = 'rejected' AND l.ts >= %(from)s AND l.ts <= %(to)s
"""


def _frame(conn: psycopg.Connection, query: str, params: dict) -> pl.DataFrame:
    rows = conn.execute(query, params).fetchall()
    return pl.DataFrame(rows, schema=ROWS_SCHEMA, orient="row")


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
    """One evaluation: the rows read, the time it took, what it recorded."""

    rows: int = 0
    seconds: float = 0.0
    recorded: Recorded = field(default_factory=Recorded)

    @property
    def changes(self) -> int:
        r = self.recorded
        return len(r.opened) + len(r.escalated) + len(r.closed)


def evaluate(
    conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime, config: RulesConfig
) -> Evaluation:
    """The rules over the rows of [lo, hi] (with `config.window` of context before), the
    breaches recorded as incidents; the newest row's time is the clock that closes quiet
    incidents."""
    clock = time.perf_counter()
    params = {"lo": lo, "hi": hi, "from": lo - config.window, "to": hi + config.window}
    breaches = []
    rows = 0
    if config.ip_limit or config.tagged:
        users = _frame(conn, _USER_ROWS, params)
        rows += users.height
        if config.ip_limit:
            breaches += ip_limit_breaches(users, config.ip_limit, user_limits(conn), since=lo)
        if config.tagged:
            breaches += tagged_breaches(users, config.tagged, since=lo)
    if config.rejected:
        rejected = _frame(conn, _REJECTED_ROWS, params)
        rows += rejected.height
        breaches += rejected_breaches(rejected, config.rejected, since=lo)
    conn.commit()
    recorded = record(conn, breaches, now=hi, quiet_minutes=config.quiet_minutes)
    return Evaluation(rows, round(time.perf_counter() - clock, 4), recorded)


def evaluate_loaded(
    conn: psycopg.Connection, loaded: list, config: RulesConfig
) -> Evaluation | None:
    """The rules over the rows that loads added (`loaded`: their LoadResult or RunStats, with
    oldest_ts and newest_ts); None when they added no access row."""
    times = [(x.oldest_ts, x.newest_ts) for x in loaded if x.oldest_ts is not None]
    if not times:
        return None
    return evaluate(conn, min(t[0] for t in times), max(t[1] for t in times), config)


def evaluate_range(
    conn: psycopg.Connection,
    lo: dt.datetime,
    hi: dt.datetime,
    config: RulesConfig,
    step: dt.timedelta = dt.timedelta(minutes=15),
) -> Evaluation:
    """The rules over [lo, hi) in steps, as the loads of a live pipeline would have judged
    them: each step closes the incidents gone quiet before it, so a day's separate episodes
    stay separate incidents."""
    total = Evaluation()
    start = lo
    while start < hi:
        end = min(start + step, hi)
        one = evaluate(conn, start, end - dt.timedelta(microseconds=1), config)
        total.rows += one.rows
        total.seconds += one.seconds
        for name in ("opened", "updated", "escalated", "closed"):
            getattr(total.recorded, name).extend(getattr(one.recorded, name))
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


def open_incidents(conn: psycopg.Connection) -> dict[str, int]:
    """The open incidents by rule."""
    rows = conn.execute(
        "SELECT rule, count(*) FROM incidents WHERE state = 'open' GROUP BY rule"
    ).fetchall()
    conn.commit()
    return dict(rows)
