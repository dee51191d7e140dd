"""`xray-pipeline forget`, `export` and `privacy`: erasure and access requests about a user,
and rewriting older days to the current [privacy] settings."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console

EmailArg = Annotated[str, typer.Argument(help="the user's email, exactly as Xray prints it")]


def forget_cmd(
    email: EmailArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Erase one user everywhere the pipeline keeps them: log rows, rejects that name them,
    rollups, the archived days' files, the nodes' landed lines, the user itself, and the
    addresses and destinations no one else has; one transaction per table. The spool is
    replayed first. The email's SHA-256 is kept so that a later load of the same bytes drops
    its lines again. Your Xray's own log files are not touched."""
    from xray_pipeline.cli.ingest import _replay_waiting
    from xray_pipeline.core.archive.store import configured_store
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.privacy.forget import forget_user

    settings = STATE.settings()
    if not yes:
        if not sys.stdin.isatty():
            err_console.print(f"error: erasing {email!r} cannot be undone; pass --yes to confirm")
            raise typer.Exit(2)
        typer.confirm(f"Erase every row of {email!r}? This cannot be undone", abort=True)
    with session(settings) as conn:
        _replay_waiting(conn, settings)  # the spool's lines are rows first, then erased
        report = forget_user(
            conn,
            email,
            timezone=settings.timezone,
            landing_dir=settings.landing_dir,
            archive=configured_store(settings),
        )
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    if not report.found and not any(report.erased.values()) and not report.landed_lines:
        console.print(f"no rows of {email!r}; recorded as forgotten for later loads")
        return
    for table, rows in report.erased.items():
        console.print(f"{table}: {rows:,} row(s) erased")
    console.print(
        f"landed lines: {report.landed_lines:,} erased in {report.landed_files:,} file(s)"
    )
    console.print(f"{email!r} is forgotten: later loads drop their lines")


def export_cmd(
    email: EmailArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="write the JSON report here (default: stdout)"),
    ] = None,
) -> None:
    """What the pipeline keeps about one user, as JSON (for an access request): their rows per
    day, sources with country and network, destinations, nodes, rollup rows and the rejects
    that name them."""
    from xray_pipeline.core.archive.store import configured_store
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.privacy.export import export_user

    settings = STATE.settings()
    with session(settings) as conn:
        report = export_user(
            conn, email, timezone=settings.timezone, archive=configured_store(settings)
        )
    text = json.dumps(report, indent=2, default=str)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err_console.print(f"wrote {out}")


privacy_app = typer.Typer(
    help="Rewrite older days to the current [privacy] settings.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@privacy_app.command("apply")
def privacy_apply(
    before: Annotated[
        str, typer.Option("--before", help="rewrite the local days before this one (YYYY-MM-DD)")
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be rewritten; change nothing")
    ] = False,
) -> None:
    """Rewrite the rows of the days before --before to the current [privacy] settings
    (source_ip, destination), one day per transaction, and rebuild their rollups; the
    archived days' files too. A killed run
    resumes: days done under the same settings are skipped. Full addresses become masked
    networks or hashes (their country and network kept); sources already masked or hashed stay
    as they are. This cannot be undone."""
    import datetime as dt

    from rich.table import Table

    from xray_pipeline.cli.console import progress_bar
    from xray_pipeline.core.archive.store import configured_store
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.privacy.apply import apply_policy, days_to_apply, signature
    from xray_pipeline.core.privacy.policy import policy_from_settings

    try:
        cutoff = dt.date.fromisoformat(before)
    except ValueError:
        err_console.print(f"error: --before {before!r}: expected a date like 2024-01-31")
        raise typer.Exit(2) from None
    settings = STATE.settings()
    policy = policy_from_settings(settings)
    if policy.keeps_everything:
        err_console.print(
            "nothing to apply: [privacy] source_ip and destination are both `full` (set them in "
            "config.ini first; rows once reduced cannot be restored)"
        )
        raise typer.Exit(2)
    with session(settings) as conn:
        archive = configured_store(settings)
        days = days_to_apply(conn, cutoff, settings.timezone, archive)
        if dry_run:
            console.print(
                f"would rewrite {len(days)} day(s) before {cutoff} to {signature(policy)} "
                "(days already done under these settings are skipped); nothing was changed"
            )
            return
        if not yes:
            if not sys.stdin.isatty():
                err_console.print("error: rewriting rows cannot be undone; pass --yes to confirm")
                raise typer.Exit(2)
            typer.confirm(
                f"Rewrite {len(days)} day(s) before {cutoff} to {signature(policy)}?", abort=True
            )
        with progress_bar("rewriting days", in_bytes=False) as bar:

            def on_day(result, done: int, total: int) -> None:
                bar.total(total)
                bar.advance(1)

            report = apply_policy(
                conn, policy, before=cutoff, timezone=settings.timezone, on_day=on_day,
                archive=archive,
            )  # fmt: skip
    table = Table(title=f"days rewritten to {report.signature}")
    for column in ("day", "rows", "sources", "destinations"):
        table.add_column(column)
    for day in report.days:
        if day.skipped:
            table.add_row(day.day.isoformat(), "done before", "", "")
        else:
            table.add_row(
                day.day.isoformat(), f"{day.rows:,}", f"{day.sources:,}", f"{day.endpoints:,}"
            )
    console.print(table)
    console.print(
        f"removed {report.places_removed:,} place(s) of full addresses and "
        f"{report.endpoints_removed:,} destination(s) that no row keeps any more"
    )
