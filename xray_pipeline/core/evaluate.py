"""Evaluate the rules over what loads added: the rows of [lo, hi] (a load's time range), with
the rows of the same subjects from `window` before as context, then record the incidents.
It reads only the subjects the new rows touch (index on user and time; rejected rows by
status and time), never a scan of history."""

import datetime as dt
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
JOIN logs l ON l.user_id = x.user_id AND l.ts >= %(from)s AND l.ts <= %(hi)s
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
WHERE l.status = 'rejected' AND l.ts >= %(from)s AND l.ts <= %(hi)s
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


def evaluate(
    conn: psycopg.Connection, lo: dt.datetime, hi: dt.datetime, config: RulesConfig
) -> Recorded:
    """The rules over the rows of [lo, hi] (with `config.window` of context before), the
    breaches recorded as incidents; the newest row's time is the clock that closes quiet
    incidents."""
    params = {"lo": lo, "hi": hi, "from": lo - config.window}
    breaches = []
    if config.ip_limit or config.tagged:
        users = _frame(conn, _USER_ROWS, params)
        if config.ip_limit:
            breaches += ip_limit_breaches(users, config.ip_limit, user_limits(conn), since=lo)
        if config.tagged:
            breaches += tagged_breaches(users, config.tagged, since=lo)
    if config.rejected:
        rejected = _frame(conn, _REJECTED_ROWS, params)
        breaches += rejected_breaches(rejected, config.rejected, since=lo)
    conn.commit()
    return record(conn, breaches, now=hi, quiet_minutes=config.quiet_minutes)
