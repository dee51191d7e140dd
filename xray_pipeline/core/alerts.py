"""Notifications of the incidents' changes, from the outbox `incident_changes`.

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
import hashlib
import hmac
import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psycopg
from loguru import logger
from psycopg.types.json import Jsonb

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Xray-Signature"
TARGETS = ("webhook", "telegram", "command")
# Telegram refuses a message longer than this
TELEGRAM_MAX_CHARS = 4096
# what is kept of a command's output
OUTPUT_KEPT = 4000


class AlertsError(ValueError):
    """A wrong [alerts] or [rules] setting: the message names it and the fix."""


@dataclass(frozen=True)
class AlertTargets:
    """Where the changes go, and how hard to try."""

    webhook_url: str | None = None
    webhook_secret: bytes | None = None
    telegram_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api: str = "https://api.telegram.org"
    command: str | None = None
    command_dry_run: bool = True
    attempts: int = 5
    backoff_seconds: float = 10.0
    cooldown_minutes: int = 10
    max_age_minutes: int = 60
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise AlertsError(
                f"[alerts] webhook_url {self.webhook_url!r} is not an http:// or https:// URL"
            )
        if bool(self.telegram_token) != bool(self.telegram_chat_id):
            missing = "telegram_chat_id" if self.telegram_token else "telegram_token"
            raise AlertsError(
                f"[alerts] {missing} is not set: Telegram needs both the bot token "
                "(XRAY_TELEGRAM_BOT_TOKEN) and the chat id (XRAY_TELEGRAM_CHAT_ID)"
            )
        if self.command:
            try:
                shlex.split(self.command)
            except ValueError as exc:
                raise AlertsError(f"[rules] on_open_command cannot be split: {exc}") from exc

    @classmethod
    def from_settings(cls, settings) -> "AlertTargets":
        alerts, rules = settings.alerts, settings.rules
        return cls(
            webhook_url=alerts.webhook_url,
            webhook_secret=(
                alerts.webhook_secret.get_secret_value().encode() if alerts.webhook_secret else None
            ),
            telegram_token=(
                alerts.telegram_token.get_secret_value() if alerts.telegram_token else None
            ),
            telegram_chat_id=alerts.telegram_chat_id,
            telegram_api=alerts.telegram_api,
            command=rules.on_open_command,
            command_dry_run=rules.on_open_dry_run,
            attempts=alerts.attempts,
            backoff_seconds=alerts.backoff_seconds,
            cooldown_minutes=alerts.cooldown_minutes,
            max_age_minutes=alerts.max_age_minutes,
            timeout_seconds=alerts.timeout_seconds,
        )

    @property
    def names(self) -> list[str]:
        """The configured targets."""
        chosen = {
            "webhook": self.webhook_url,
            "telegram": self.telegram_token,
            "command": self.command,
        }
        return [name for name in TARGETS if chosen[name]]


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
        WHERE pc.incident_id = i.id AND p.target = d.target AND p.status = 'sent')
FROM alert_deliveries d
JOIN incident_changes c ON c.id = d.change_id
JOIN incidents i ON i.id = c.incident_id
WHERE d.status = 'pending' AND d.next_attempt_at <= %(now)s
ORDER BY d.next_attempt_at, d.change_id
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED
"""
_COLUMNS = (
    "change_id",
    "target",
    "attempts",
    "change",
    "at",
    "id",
    "rule",
    "subject",
    "state",
    "opened_at",
    "last_seen",
    "closed_at",
    "peak",
    "limit",
    "evidence",
    "acknowledged_at",
    "last_sent",
)


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
            with conn.transaction():
                rows = conn.execute(_CLAIM, {"now": now, "limit": batch}).fetchall()
                for values in rows:
                    row = dict(zip(_COLUMNS, values, strict=True))
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


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def payload(row: dict) -> dict:
    """The JSON a target gets for one change: schema `version` 1 (docs/alerts.md)."""
    return {
        "version": SCHEMA_VERSION,
        "delivery": f"{row['change_id']}",
        "event": row["change"],
        "at": _iso(row["at"]),
        "incident": {
            "id": row["id"],
            "rule": row["rule"],
            "subject": row["subject"],
            "state": row["state"],
            "opened_at": _iso(row["opened_at"]),
            "last_seen": _iso(row["last_seen"]),
            "closed_at": _iso(row["closed_at"]),
            "peak": row["peak"],
            "limit": row["limit"],
            "acknowledged_at": _iso(row["acknowledged_at"]),
            "evidence": row["evidence"],
        },
    }


class TargetError(RuntimeError):
    """A target refused or did not answer; `retry_after` seconds when it said when."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def signature(secret: bytes, body: bytes) -> str:
    """The X-Xray-Signature value of a body: sha256=<hex HMAC-SHA256>."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _check(response: httpx.Response) -> str:
    if response.is_success:
        return response.text
    retry_after = None
    if response.status_code == 429:
        try:
            retry_after = float(
                response.headers.get("Retry-After")
                or response.json().get("parameters", {}).get("retry_after")
            )
        except (TypeError, ValueError, json.JSONDecodeError):
            retry_after = None
    raise TargetError(f"HTTP {response.status_code}: {response.text[:300]}", retry_after)


def send_webhook(
    conn: psycopg.Connection, targets: AlertTargets, client: httpx.Client, message: dict
) -> str:
    body = json.dumps(message, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Xray-Event": f"incident.{message['event']}",
        "X-Xray-Delivery": message["delivery"],
    }
    if targets.webhook_secret:
        headers[SIGNATURE_HEADER] = signature(targets.webhook_secret, body)
    return _check(client.post(targets.webhook_url, content=body, headers=headers))


RULE_TEXT = {
    "ip_limit": "sources",
    "tagged": "connections to a watched tag",
    "rejected": "rejected connections",
}


def telegram_text(message: dict) -> str:
    """The plain text of a Telegram message about one change."""
    incident = message["incident"]
    what = RULE_TEXT.get(incident["rule"], "events")
    lines = [
        f"Incident #{incident['id']} {message['event']}: {incident['rule']}",
        f"{incident['subject']}: {incident['peak']} {what} (limit {incident['limit']})",
        f"opened {incident['opened_at']}, last seen {incident['last_seen']}",
    ]
    for unit in incident["evidence"][:10]:
        place = " ".join(str(v) for v in (unit.get("country"), unit.get("asn")) if v)
        nodes = ",".join(unit.get("nodes") or [])
        lines.append(
            f"- {unit.get('unit')} {place} on {nodes or '?'}: {unit.get('connections')} conn"
        )
    if len(incident["evidence"]) > 10:
        lines.append(f"... and {len(incident['evidence']) - 10} more")
    return "\n".join(lines)[:TELEGRAM_MAX_CHARS]


def send_telegram(
    conn: psycopg.Connection, targets: AlertTargets, client: httpx.Client, message: dict
) -> str:
    url = f"{targets.telegram_api.rstrip('/')}/bot{targets.telegram_token}/sendMessage"
    body = {"chat_id": targets.telegram_chat_id, "text": telegram_text(message)}
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:  # its message may hold the URL, and the URL the token
        raise TargetError(type(exc).__name__) from None
    return _check(response)


def run_command(
    conn: psycopg.Connection, targets: AlertTargets, client: httpx.Client, message: dict
) -> str:
    """on_open_command with the message on stdin (in a dry run, only kept); what it did is
    kept in the incident's `action`."""
    stdin = json.dumps(message)
    action = {"command": targets.command, "dry_run": targets.command_dry_run, "at": _now()}
    if targets.command_dry_run:
        action["stdin"] = message
        outcome = "dry run: not run"
    else:
        try:
            done = subprocess.run(
                shlex.split(targets.command),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=max(targets.timeout_seconds, 30),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            action["error"] = str(exc)
            _keep_action(conn, message, action)
            raise TargetError(f"on_open_command: {exc}") from None
        action |= {
            "returncode": done.returncode,
            "stdout": done.stdout[-OUTPUT_KEPT:],
            "stderr": done.stderr[-OUTPUT_KEPT:],
        }
        if done.returncode != 0:
            _keep_action(conn, message, action)
            raise TargetError(f"on_open_command exited {done.returncode}: {done.stderr[-300:]}")
        outcome = f"exit 0: {done.stdout[-300:]}"
    _keep_action(conn, message, action)
    return outcome


def _keep_action(conn: psycopg.Connection, message: dict, action: dict) -> None:
    conn.execute(
        "UPDATE incidents SET action = %s WHERE id = %s",
        (Jsonb(action), message["incident"]["id"]),
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


SENDERS = {"webhook": send_webhook, "telegram": send_telegram, "command": run_command}


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
