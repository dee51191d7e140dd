"""Notifications of the incidents' changes, from the outbox `incident_changes` (what each
target gets: core/notify.py).

Each change (opened, escalated, closed) gets one `alert_deliveries` row per configured target
(a webhook, Telegram, and for an opened incident the on_open_command) and is sent until it
succeeds: a failure is tried again after a doubling backoff, and after [alerts] attempts the
row stays as 'dead', with its last error, for `xray-pipeline alerts` to show and retry. The
rows are claimed with FOR UPDATE SKIP LOCKED, so two senders (the tail run and the sensor)
never send one twice, and a restart resumes where the last one stopped. The webhook's body
carries its delivery id, so a receiver can drop the one repeat that a crash between the send
and its commit can cause.
"""

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psycopg
from loguru import logger
from psycopg.rows import dict_row

from xray_pipeline.core.alerts.targets import OUTPUT_KEPT, SENDERS, AlertTargets, payload


@dataclass
class Delivered:
    """What one pass of `deliver` did, by outcome."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    stale: int = 0
    held: int = 0
    errors: list[str] = field(default_factory=list)
    next_due: dt.datetime | None = None  # when the next pending delivery is due


_DISPATCH = """
WITH due AS (
    UPDATE incident_changes SET dispatched_at = %(now)s
    WHERE id IN (SELECT id FROM incident_changes WHERE dispatched_at IS NULL
                 ORDER BY id FOR UPDATE SKIP LOCKED)
    RETURNING id, change, at
)
INSERT INTO alert_deliveries (change_id, target, status, next_attempt_at)
SELECT due.id, t.target,
       CASE WHEN due.at < %(stale_before)s THEN 'stale' ELSE 'pending' END, %(now)s
FROM due CROSS JOIN unnest(%(targets)s::text[]) AS t (target)
WHERE t.target <> 'command' OR due.change = 'opened'
ON CONFLICT DO NOTHING
RETURNING status
"""
_CLAIM = """
SELECT d.change_id, d.target, d.attempts, c.change, c.at, i.id, i.rule, i.subject, i.state,
       i.opened_at, i.last_seen, i.closed_at, i.peak, i."limit", i.evidence,
       i.acknowledged_at,
       (SELECT max(p.sent_at) FROM alert_deliveries p
        JOIN incident_changes pc ON pc.id = p.change_id
        WHERE pc.incident_id = i.id AND p.target = d.target AND p.status = 'sent') AS last_sent
FROM alert_deliveries d
JOIN incident_changes c ON c.id = d.change_id
JOIN incidents i ON i.id = c.incident_id
WHERE d.status = 'pending' AND d.next_attempt_at <= %(now)s
ORDER BY d.next_attempt_at, d.change_id
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED
"""


def dispatch(conn: psycopg.Connection, targets: AlertTargets, now: dt.datetime) -> int:
    """Give each change not yet dispatched its delivery rows (none when no target is set);
    how many were too old to send (stale)."""
    stale_before = now - dt.timedelta(minutes=targets.max_age_minutes)
    with conn.transaction():
        rows = conn.execute(
            _DISPATCH,
            {"now": now, "stale_before": stale_before, "targets": targets.names},
        ).fetchall()
    return sum(1 for (status,) in rows if status == "stale")


def deliver(
    conn: psycopg.Connection,
    targets: AlertTargets,
    *,
    now: dt.datetime | None = None,
    batch: int = 5,
    seconds: float | None = None,
    client: httpx.Client | None = None,
) -> Delivered:
    """Send the due deliveries, `batch` at a time, until none is due or `seconds` have
    passed (what is left is sent by the next pass); what happened."""
    now = now or dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    result = Delivered(stale=dispatch(conn, targets, now))
    sent: dict[tuple[int, str], dt.datetime] = {}  # (incident, target): sent in this pass
    own = client is None
    client = client or httpx.Client(timeout=targets.timeout_seconds)
    try:
        while seconds is None or time.monotonic() - clock < seconds:
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(_CLAIM, {"now": now, "limit": batch}).fetchall()
                for row in rows:
                    last = sent.get((row["id"], row["target"]))
                    row["last_sent"] = max(filter(None, (row["last_sent"], last)), default=None)
                    if _deliver_one(conn, targets, client, row, now, result):
                        sent[row["id"], row["target"]] = now
            if len(rows) < batch:
                break
    finally:
        if own:
            client.close()
    result.next_due = conn.execute(
        "SELECT min(next_attempt_at) FROM alert_deliveries WHERE status = 'pending'"
    ).fetchone()[0]
    conn.commit()
    return result


def retry_dead(conn: psycopg.Connection, target: str | None = None) -> int:
    """Put the dead letter's deliveries (of one target) back in the queue; how many."""
    with conn.transaction():
        done = conn.execute(
            "UPDATE alert_deliveries SET status = 'pending', attempts = 0, next_attempt_at = "
            "now() WHERE status = 'dead' AND (%(target)s::text IS NULL OR target = %(target)s)",
            {"target": target},
        )
    return done.rowcount


def _deliver_one(
    conn: psycopg.Connection,
    targets: AlertTargets,
    client: httpx.Client,
    row: dict,
    now: dt.datetime,
    result: Delivered,
) -> bool:
    """Send one delivery (or hold it for the incident's cooldown); whether it was sent."""
    key = (row["change_id"], row["target"])
    cooldown = dt.timedelta(minutes=targets.cooldown_minutes)
    if row["last_sent"] is not None and row["last_sent"] + cooldown > now:
        conn.execute(
            "UPDATE alert_deliveries SET next_attempt_at = %s WHERE change_id = %s AND target = %s",
            (row["last_sent"] + cooldown, *key),
        )
        result.held += 1
        return False
    message = payload(row)
    try:
        response = SENDERS[row["target"]](conn, targets, client, message)
    except Exception as exc:  # a target's failure, whatever it is, is kept, never raised
        attempts = row["attempts"] + 1
        error = f"{type(exc).__name__}: {exc}"[:1000]
        if attempts >= targets.attempts:
            status, when = "dead", now
            result.dead += 1
        else:
            status = "pending"
            wait = getattr(exc, "retry_after", None) or targets.backoff_seconds * 2 ** (
                attempts - 1
            )
            when = now + dt.timedelta(seconds=wait)
            result.failed += 1
        result.errors.append(f"{row['target']} #{row['id']} {row['change']}: {error}")
        conn.execute(
            "UPDATE alert_deliveries SET status = %s, attempts = %s, next_attempt_at = %s, "
            "last_error = %s WHERE change_id = %s AND target = %s",
            (status, attempts, when, error, *key),
        )
        return False
    conn.execute(
        "UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1, sent_at = %s, "
        "response = %s WHERE change_id = %s AND target = %s",
        (now, response[:OUTPUT_KEPT], *key),
    )
    result.sent += 1
    return True


class Sender(threading.Thread):
    """Sends the due deliveries in the background of a long run: at once when poked (a load
    recorded changes), else every `every` seconds (the retries). A failure of the database is
    logged and tried again at the next wake; the run it serves goes on loading."""

    def __init__(
        self, connect: Callable[[], psycopg.Connection], targets: AlertTargets, every: float = 5.0
    ) -> None:
        super().__init__(name="alert-sender", daemon=True)
        self.connect, self.targets, self.every = connect, targets, every
        self.wake, self.done = threading.Event(), threading.Event()
        self.totals = Delivered()

    def poke(self) -> None:
        self.wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self.done.set()
        self.wake.set()
        self.join(timeout)

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        wait = self.every
        while not self.done.is_set():
            self.wake.wait(wait)
            self.wake.clear()
            wait = self.every
            try:
                conn = conn if conn is not None and not conn.closed else self.connect()
                result = deliver(conn, self.targets, seconds=30)
            except (psycopg.Error, OSError) as exc:
                logger.warning("alerts: the database failed, trying again: {}", exc)
                if conn is not None:
                    conn.close()
                conn = None
                continue
            for name in ("sent", "failed", "dead", "stale", "held"):
                setattr(self.totals, name, getattr(self.totals, name) + getattr(result, name))
            for error in result.errors:
                logger.warning("alerts: {}", error)
            if result.next_due is not None:  # a retry due sooner than the next look
                due = (result.next_due - dt.datetime.now(dt.UTC)).total_seconds()
                wait = min(self.every, max(0.05, due))
        if conn is not None:
            conn.close()
