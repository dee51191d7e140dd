"""What a target of the alerts gets, and how each is sent: the webhook's signed JSON (schema
version 1, docs/alerts.md), Telegram's sendMessage, and [rules] on_open_command. A sender
returns the target's answer or raises; core/alerts.py keeps the outcome."""

import datetime as dt
import hashlib
import hmac
import json
import shlex
import subprocess
from dataclasses import dataclass

import httpx
import psycopg
from psycopg.types.json import Jsonb

from xray_pipeline.settings.sections import AlertsSettings, RulesSettings

SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Xray-Signature"
TARGETS = ("webhook", "telegram", "command")
# Telegram refuses a message longer than this
TELEGRAM_MAX_CHARS = 4096
# what is kept of a command's output
OUTPUT_KEPT = 4000


class AlertsError(ValueError):
    """A wrong [alerts] or [rules] setting: the message names it and the fix."""


_ALERTS = AlertsSettings()  # the defaults' one home: [alerts]


@dataclass(frozen=True)
class AlertTargets:
    """Where the changes go, and how hard to try."""

    webhook_url: str | None = None
    webhook_secret: bytes | None = None
    telegram_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api: str = _ALERTS.telegram_api
    command: str | None = None
    command_dry_run: bool = RulesSettings().on_open_dry_run
    attempts: int = _ALERTS.attempts
    backoff_seconds: float = _ALERTS.backoff_seconds
    cooldown_minutes: int = _ALERTS.cooldown_minutes
    max_age_minutes: int = _ALERTS.max_age_minutes
    timeout_seconds: float = _ALERTS.timeout_seconds

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
        """The targets of [alerts] and [rules] on_open_command."""
        return cls.of(settings.alerts, settings.rules)

    @classmethod
    def of(cls, alerts, rules) -> "AlertTargets":
        """The targets of anything with the settings' names: the [alerts] and [rules]
        sections, or the Dagster resource that holds both (secrets as SecretStr or text)."""
        secret, token = _text(alerts.webhook_secret), _text(alerts.telegram_token)
        return cls(
            webhook_url=alerts.webhook_url,
            webhook_secret=secret.encode() if secret else None,
            telegram_token=token,
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


def _text(secret) -> str | None:
    """A secret's text, whether a pydantic SecretStr or already text."""
    if secret is None:
        return None
    return secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret


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
