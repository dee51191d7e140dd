"""The `xray-pipeline` command: one module per command group; they call core/ and defs/."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger

from xray_pipeline.cli import ingest, migrate, parse, privacy, run, ship
from xray_pipeline.cli.archive import archive_app
from xray_pipeline.cli.config import config_app
from xray_pipeline.cli.console import STATE, err_console
from xray_pipeline.cli.db import db_app
from xray_pipeline.cli.geoip import geoip_app
from xray_pipeline.cli.incidents import alerts_app, incidents_app
from xray_pipeline.cli.limits import limits_app
from xray_pipeline.cli.nodes import nodes_app
from xray_pipeline.log import configure_logging
from xray_pipeline.settings import SettingsError

app = typer.Typer(
    name="xray-pipeline",
    help="Keep every Xray/V2Ray access-log line, exactly once, in partitioned PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("demo")(run.demo_cmd)
app.command("up")(run.up_cmd)
app.command("serve")(run.serve_cmd)
app.command("ingest")(ingest.ingest_cmd)
app.command("replay")(ingest.replay_cmd)
app.command("parse")(parse.parse_cmd)
app.command("generate")(parse.generate_cmd)
app.command("migrate")(migrate.migrate_cmd)
app.command("ship")(ship.ship_cmd)
app.command("forget")(privacy.forget_cmd)
app.command("export")(privacy.export_cmd)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(nodes_app, name="nodes")
app.add_typer(geoip_app, name="geoip")
app.add_typer(privacy.privacy_app, name="privacy")
app.add_typer(limits_app, name="limits")
app.add_typer(incidents_app, name="incidents")
app.add_typer(alerts_app, name="alerts")
app.add_typer(ingest.spool_app, name="spool")
app.add_typer(archive_app, name="archive")


@app.callback()
def main_options(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="config.ini to read (default: ./config.ini, XRAY_CONFIG)"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL; wins over config.ini and XRAY_DATABASE_URL",
            envvar=None,
        ),
    ] = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="state folder (default ./.xray, XRAY_HOME)")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", help="zone of the Xray clock, e.g. UTC or Europe/Berlin"),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="log as JSON lines")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show tracebacks on errors")
    ] = False,
) -> None:
    """Keep every Xray/V2Ray access-log line, exactly once, in partitioned PostgreSQL."""
    STATE.config = config
    STATE.verbose = verbose
    STATE.overrides = {
        "postgresql.url": database_url,
        "general.home": str(home) if home else None,
        "parser.timezone": timezone,
        "general.log_level": log_level,
    }
    settings = STATE.settings()
    configure_logging(settings.general.log_level, json_lines=log_json)


def _refusal(exc: Exception) -> str:
    """A PostgreSQL error as one line, with the fix for the ones a setting causes."""
    import psycopg

    message = (exc.diag.message_primary if exc.diag else None) or str(exc).splitlines()[0]
    text = f"PostgreSQL refused: {message}"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        text += (
            ". The role of the configured URL ([postgresql] user or XRAY_DATABASE_URL) lacks "
            "that right: connect as the database's owner (the `xray_api` role is the "
            "sidecar's, read-only)"
        )
    return text


def main() -> None:
    """Run the CLI; known errors become one line on stderr and a non-zero exit."""
    import psycopg

    from xray_pipeline.core.db.connect import DatabaseError

    verbose = STATE.verbose or os.environ.get("XRAY_VERBOSE")
    try:
        app()
    except (SettingsError, DatabaseError) as exc:
        if STATE.verbose or verbose:
            logger.exception("failed")
        err_console.print(f"error: {exc}")
        sys.exit(2 if isinstance(exc, SettingsError) else 1)
    except psycopg.Error as exc:  # the server answered but refused: say what, and what to do
        if STATE.verbose or verbose:
            logger.exception("failed")
        err_console.print(f"error: {_refusal(exc)} (--verbose shows where)")
        sys.exit(1)
    except BrokenPipeError:
        # output piped into `head` and the like: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
