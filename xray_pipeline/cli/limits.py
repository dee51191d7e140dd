"""`xray-pipeline limits`: per-user IP limits over [rules] ip_limit."""

from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console

limits_app = typer.Typer(
    help="Per-user IP limits (distinct sources within [rules] ip_window_minutes).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
EmailArg = Annotated[str, typer.Argument(help="the user's email, exactly as Xray prints it")]


def _set(email: str, limit: int | None):
    """Set or clear one user's limit; exit 2 naming why it cannot be. The settings used."""
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.rules.evaluate import LimitError, set_user_limit

    settings = STATE.settings()
    try:
        with session(settings) as conn:
            set_user_limit(conn, email, limit)
    except LimitError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    return settings


@limits_app.command("set")
def limits_set(
    email: EmailArg,
    limit: Annotated[int, typer.Argument(help="distinct sources allowed", min=1)],
) -> None:
    """Allow this user LIMIT distinct sources (a family plan, say) instead of [rules] ip_limit."""
    _set(email, limit)
    console.print(f"{email}: at most {limit} distinct sources")


@limits_app.command("clear")
def limits_clear(email: EmailArg) -> None:
    """Put this user back on [rules] ip_limit."""
    settings = _set(email, None)
    console.print(f"{email}: back on [rules] ip_limit ({settings.rules.ip_limit})")


@limits_app.command("list")
def limits_list() -> None:
    """The users with their own limit, and the default."""
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.rules.evaluate import user_limits

    settings = STATE.settings()
    with session(settings) as conn:
        limits = user_limits(conn)
    console.print(
        f"default: {settings.rules.ip_limit} distinct sources ({settings.rules.ip_count_by}) "
        f"within {settings.rules.ip_window_minutes} minutes"
    )
    for email, limit in sorted(limits.items()):
        console.print(f"{email}: {limit}")
