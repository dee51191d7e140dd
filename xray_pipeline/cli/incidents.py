"""`xray-pipeline incidents` (what the rules found) and `xray-pipeline alerts` (where it was
sent, the dead letter, a receiver to try a webhook with)."""

import datetime as dt
import json
import time
from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console

incidents_app = typer.Typer(
    help="The incidents of the abuse rules ([rules]): list them, show one with its evidence.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
alerts_app = typer.Typer(
    help="The notifications of the incidents ([alerts]): their state, the dead letter, a "
    "test receiver.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _text(value) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return "" if value is None else str(value)


@incidents_app.command("list")
def incidents_list(
    open_only: Annotated[bool, typer.Option("--open", help="open incidents only")] = False,
    rule: Annotated[str | None, typer.Option(help="ip_limit, tagged or rejected")] = None,
    user: Annotated[str | None, typer.Option(help="a user (or a source, for rejected)")] = None,
    node: Annotated[str | None, typer.Option(help="seen on this node")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The incidents, newest first."""
    from psycopg.rows import dict_row

    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.rules.incidents import IncidentFilter, list_query

    if rule is not None and rule not in ("ip_limit", "tagged", "rejected"):
        err_console.print(f"error: --rule {rule!r}: use ip_limit, tagged or rejected")
        raise typer.Exit(2)
    filters = IncidentFilter(open=True if open_only else None, rule=rule, subject=user, node=node)
    page, count, params = list_query(filters, limit, 0)
    with session(STATE.settings()) as conn, conn.cursor(row_factory=dict_row) as cur:
        items = cur.execute(page, params).fetchall()
        total = cur.execute(count, params).fetchone()["count"]
    if as_json:
        for item in items:
            console.print_json(json.dumps(item, default=_text))
        return
    for i in items:
        ack = " acknowledged" if i["acknowledged_at"] else ""
        console.print(
            f"#{i['id']} {i['state']}{ack} {i['rule']} {i['subject']}: {i['peak']} "
            f"(limit {i['limit']}) on {','.join(i['nodes']) or '-'}, "
            f"{_text(i['opened_at'])} .. {_text(i['closed_at'] or i['last_seen'])}",
            highlight=False,
        )
    console.print(f"{len(items)} of {total} incident(s)")


@incidents_app.command("show")
def incidents_show(incident: Annotated[int, typer.Argument(help="the incident's id")]) -> None:
    """One incident as JSON: its evidence, its changes and where each was sent."""
    from psycopg.rows import dict_row

    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.rules.incidents import CHANGES_QUERY, ONE_QUERY

    with session(STATE.settings()) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(ONE_QUERY, {"id": incident}).fetchone()
        if row is None:
            err_console.print(f"error: no incident {incident} (`incidents list` shows them)")
            raise typer.Exit(1)
        row["changes"] = cur.execute(CHANGES_QUERY, {"id": incident}).fetchall()
    console.print_json(json.dumps(row, default=_text))


@alerts_app.command("list")
def alerts_list(
    status: Annotated[
        str | None, typer.Option(help="sent, pending, dead (the dead letter) or stale")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """The notifications, newest first, with their last error."""
    from xray_pipeline.core.db.session import session

    with session(STATE.settings()) as conn:
        counts = conn.execute(
            "SELECT target, status, count(*) FROM alert_deliveries GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        rows = conn.execute(
            """
            SELECT c.incident_id, c.change, d.target, d.status, d.attempts, d.sent_at,
                   d.next_attempt_at, d.last_error
            FROM alert_deliveries d JOIN incident_changes c ON c.id = d.change_id
            WHERE %(status)s::text IS NULL OR d.status = %(status)s
            ORDER BY c.id DESC, d.target LIMIT %(limit)s
            """,
            {"status": status, "limit": limit},
        ).fetchall()
    for target, state, n in counts:
        console.print(f"{target} {state}: {n}", highlight=False)
    for incident, change, target, state, attempts, sent_at, next_at, error in rows:
        when = _text(sent_at) if state == "sent" else f"next {_text(next_at)}"
        tail = f": {error}" if error and state != "sent" else ""
        console.print(
            f"#{incident} {change} -> {target} {state} ({attempts} attempt(s), {when}){tail}",
            highlight=False,
        )


@alerts_app.command("retry")
def alerts_retry(
    target: Annotated[str | None, typer.Option(help="webhook, telegram or command")] = None,
) -> None:
    """Send the dead letter again (after fixing the target), then send what is due now."""
    from xray_pipeline.core.alerts.outbox import deliver, retry_dead
    from xray_pipeline.core.alerts.targets import AlertTargets
    from xray_pipeline.core.db.session import session

    settings = STATE.settings()
    with session(settings) as conn:
        queued = retry_dead(conn, target)
        result = deliver(conn, AlertTargets.from_settings(settings), seconds=60)
    console.print(f"{queued} from the dead letter queued again")
    _report(result)


@alerts_app.command("send")
def alerts_send() -> None:
    """Send what is due now (the pipeline does this by itself: incident_alerts_sensor and the
    tail run); says what each target answered."""
    from xray_pipeline.core.alerts.outbox import deliver
    from xray_pipeline.core.alerts.targets import AlertTargets
    from xray_pipeline.core.db.session import session

    settings = STATE.settings()
    targets = AlertTargets.from_settings(settings)
    if not targets.names:
        err_console.print(
            "error: no target: set [alerts] webhook_url, or telegram_token and "
            "telegram_chat_id, or [rules] on_open_command"
        )
        raise typer.Exit(2)
    with session(settings) as conn:
        _report(deliver(conn, targets, seconds=60))


def _report(result) -> None:
    console.print(
        f"sent {result.sent}, failed {result.failed} (to retry), dead {result.dead}, "
        f"stale {result.stale}, held by cooldown {result.held}",
        highlight=False,
    )
    for error in result.errors:
        err_console.print(error, highlight=False)


@alerts_app.command("receive")
def alerts_receive(
    port: Annotated[int, typer.Option(help="the port to listen on", min=1, max=65535)] = 8765,
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
) -> None:
    """Listen for webhooks and print each one, with whether its signature is right (checked
    with [alerts] webhook_secret): point [alerts] webhook_url at http://HOST:PORT/ to try the
    alerts out. Ctrl-C stops it."""
    from xray_pipeline.core.alerts.receiver import Receiver

    settings = STATE.settings()
    secret = settings.alerts.webhook_secret
    receiver = Receiver(secret=secret.get_secret_value().encode() if secret else None)
    receiver.start(host, port)
    console.print(f"listening on {receiver.url}/ (Ctrl-C stops)")
    shown = 0
    try:
        while True:
            got = receiver.wait(shown + 1, timeout=1.0)
            for request in got[shown:]:
                signed = {True: "signature ok", False: "SIGNATURE WRONG", None: "unchecked"}
                console.print(f"{request.headers.get('X-Xray-Event')} ({signed[request.signed]})")
                console.print_json(json.dumps(request.body))
            shown = len(got)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
