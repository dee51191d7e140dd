"""Incidents: the breaches of the rules kept as rows. A breach of a subject that has an open
incident of the same rule updates it (last seen, peak, the evidence at the highest peak); one
after the incident closed opens a new one. Each state change (opened, escalated: the peak
reached twice the limit, closed) is written once to `incident_changes`, in the same
transaction, for the notifications to send."""

import datetime as dt
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

from xray_pipeline.core.rules.detect import Breach

_OPEN = """
INSERT INTO incidents (rule, subject, opened_at, last_seen, peak, "limit", evidence)
VALUES (%(rule)s, %(subject)s, %(first)s, %(last)s, %(peak)s, %(limit)s, %(evidence)s)
ON CONFLICT (rule, subject) WHERE state = 'open' DO UPDATE SET
    last_seen = greatest(incidents.last_seen, EXCLUDED.last_seen),
    evidence = CASE WHEN EXCLUDED.peak > incidents.peak THEN EXCLUDED.evidence
                    ELSE incidents.evidence END,
    peak = greatest(incidents.peak, EXCLUDED.peak),
    updated_at = now()
RETURNING id, (xmax = 0) AS inserted, peak, "limit", opened_at
"""
_CHANGE = """
INSERT INTO incident_changes (incident_id, change, at, peak) VALUES (%s, %s, %s, %s)
ON CONFLICT ON CONSTRAINT incident_changes_once DO NOTHING
"""


@dataclass
class Recorded:
    """What recording a batch of breaches and closing the quiet incidents did."""

    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)


def _json(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def record(
    conn: psycopg.Connection, breaches: list[Breach], *, now: dt.datetime, quiet_minutes: int
) -> Recorded:
    """Close the incidents quiet since `quiet_minutes` before `now` (the time of the newest
    row evaluated, so that a replay of old days closes them as the live run did), then open or
    update one per breach; one transaction."""
    result = Recorded()
    with conn.transaction():
        result.closed = close_quiet(conn, now=now, quiet_minutes=quiet_minutes)
        quiet = dt.timedelta(minutes=quiet_minutes)
        for breach in sorted(breaches, key=lambda b: (b.rule, b.subject)):
            row = conn.execute(
                "SELECT id, last_seen FROM incidents WHERE rule = %s AND subject = %s "
                "AND state = 'open'",
                (breach.rule, breach.subject),
            ).fetchone()
            if row is not None and breach.first - row[1] > quiet:
                _close(conn, row[0], row[1] + quiet)  # a new episode: the old one ended
                result.closed.append(row[0])
            incident, inserted, peak, limit, opened_at = conn.execute(
                _OPEN,
                {
                    "rule": breach.rule,
                    "subject": breach.subject,
                    "first": breach.first,
                    "last": breach.last,
                    "peak": breach.peak,
                    "limit": breach.limit,
                    "evidence": Jsonb(_json(breach.evidence)),
                },
            ).fetchone()
            if inserted:
                conn.execute(_CHANGE, (incident, "opened", opened_at, peak))
                result.opened.append(incident)
            else:
                result.updated.append(incident)
            if peak >= 2 * limit:
                changed = conn.execute(_CHANGE, (incident, "escalated", breach.last, peak))
                if changed.rowcount:
                    result.escalated.append(incident)
    return result


def _close(conn: psycopg.Connection, incident: int, at: dt.datetime) -> None:
    conn.execute(
        "UPDATE incidents SET state = 'closed', closed_at = %s, updated_at = now() WHERE id = %s",
        (at, incident),
    )
    peak = conn.execute("SELECT peak FROM incidents WHERE id = %s", (incident,)).fetchone()[0]
    conn.execute(_CHANGE, (incident, "closed", at, peak))


def close_quiet(conn: psycopg.Connection, *, now: dt.datetime, quiet_minutes: int) -> list[int]:
    """Close the open incidents not seen for `quiet_minutes` before `now`; their ids."""
    quiet = dt.timedelta(minutes=quiet_minutes)
    rows = conn.execute(
        "SELECT id, last_seen FROM incidents WHERE state = 'open' AND last_seen < %s ORDER BY id",
        (now - quiet,),
    ).fetchall()
    for incident, last_seen in rows:
        _close(conn, incident, last_seen + quiet)
    return [r[0] for r in rows]


# --------------------------------------------------------------------------- reading them

_SELECT = """
SELECT i.id, i.rule, i.subject, i.state, i.opened_at, i.last_seen, i.closed_at, i.peak,
       i."limit", i.acknowledged_at,
       ARRAY(SELECT DISTINCT n FROM jsonb_array_elements(i.evidence) e,
             jsonb_array_elements_text(e -> 'nodes') n ORDER BY 1) AS nodes,
       jsonb_array_length(i.evidence) AS units
FROM incidents i
"""


@dataclass(frozen=True)
class IncidentFilter:
    """Which incidents: open or closed, of a rule, of a subject (a user, or a source for
    rejected storms), seen on a node, overlapping [since, until]."""

    open: bool | None = None
    rule: str | None = None
    subject: str | None = None
    node: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def where(self) -> tuple[str, dict]:
        conds, params = [], {}
        if self.open is not None:
            conds.append("i.state = %(state)s")
            params["state"] = "open" if self.open else "closed"
        if self.rule:
            conds.append("i.rule = %(rule)s")
            params["rule"] = self.rule
        if self.subject:
            conds.append("i.subject = %(subject)s")
            params["subject"] = self.subject
        if self.node:
            conds.append("i.evidence @> %(node)s")
            params["node"] = Jsonb([{"nodes": [self.node]}])
        if self.since:
            conds.append("coalesce(i.closed_at, i.last_seen) >= %(since)s")
            params["since"] = self.since
        if self.until:
            conds.append("i.opened_at <= %(until)s")
            params["until"] = self.until
        return ("WHERE " + " AND ".join(conds)) if conds else "", params


def list_query(filters: IncidentFilter, limit: int, offset: int) -> tuple[str, str, dict]:
    """(the page's query, the count's query, their parameters): newest first."""
    where, params = filters.where()
    order = "ORDER BY i.opened_at DESC, i.id DESC LIMIT %(limit)s OFFSET %(offset)s"
    page = f"{_SELECT} {where} {order}"
    count = f"SELECT count(*) FROM incidents i {where}"
    return page, count, {**params, "limit": limit, "offset": offset}


ONE_QUERY = _SELECT.replace("FROM incidents i", ", i.evidence, i.action FROM incidents i") + (
    " WHERE i.id = %(id)s"
)
CHANGES_QUERY = """
SELECT c.change, c.at, c.peak,
       coalesce(jsonb_agg(jsonb_build_object(
           'target', d.target, 'status', d.status, 'attempts', d.attempts,
           'sent_at', d.sent_at, 'last_error', d.last_error)
           ORDER BY d.target) FILTER (WHERE d.target IS NOT NULL), '[]') AS deliveries
FROM incident_changes c LEFT JOIN alert_deliveries d ON d.change_id = c.id
WHERE c.incident_id = %(id)s GROUP BY c.id ORDER BY c.id
"""


class IncidentError(LookupError):
    """An incident that does not exist or cannot take the change asked for."""


def acknowledge(conn: psycopg.Connection, incident: int) -> dt.datetime:
    """Mark an incident as seen by an operator (it stays open while the condition holds)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE incidents SET acknowledged_at = coalesce(acknowledged_at, now()), "
            "updated_at = now() WHERE id = %s RETURNING acknowledged_at",
            (incident,),
        ).fetchone()
    if row is None:
        raise IncidentError(f"no incident {incident}")
    return row[0]


def close(conn: psycopg.Connection, incident: int) -> dt.datetime:
    """Close an open incident now, by hand (its `closed` change is sent like any other); a
    breach after this opens a new one."""
    with conn.transaction():
        row = conn.execute(
            "SELECT state FROM incidents WHERE id = %s FOR UPDATE", (incident,)
        ).fetchone()
        if row is None:
            raise IncidentError(f"no incident {incident}")
        if row[0] != "open":
            raise IncidentError(f"incident {incident} is closed already")
        at = conn.execute("SELECT greatest(now(), last_seen) FROM incidents WHERE id = %s",
                          (incident,)).fetchone()[0]  # fmt: skip
        _close(conn, incident, at)
    return at
