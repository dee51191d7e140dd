"""`xray-pipeline db`: the embedded server, the schema, a DSN and psql."""

import subprocess
from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console
from xray_pipeline.settings import Settings

db_app = typer.Typer(
    help="Manage the database: the embedded server and the schema.", rich_markup_mode=None
)


def _embedded_or_exit(settings: Settings):
    from xray_pipeline.core.db.session import embedded_server

    if not settings.uses_embedded:
        err_console.print(
            f"the database is configured by {settings.origin_of_database()}, not embedded; "
            "unset it to manage the embedded server"
        )
        raise typer.Exit(2)
    return embedded_server(settings)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (harmless when it already runs)."""
    server = _embedded_or_exit(STATE.settings())
    status = server.start()
    console.print(f"embedded PostgreSQL running (pid {status.pid}) at {server.url()}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    server = _embedded_or_exit(STATE.settings())
    if server.stop():
        console.print("embedded PostgreSQL stopped")
    else:
        console.print("embedded PostgreSQL was not running")


@db_app.command("status")
def db_status() -> None:
    """Say whether the database answers; exit 1 when it does not."""
    from xray_pipeline.core.db.connect import DatabaseError, connect
    from xray_pipeline.core.db.session import embedded_server, server_version

    settings = STATE.settings()
    if settings.uses_embedded:
        status = embedded_server(settings).status()
        console.print(
            f"embedded PostgreSQL: {status.detail}"
            + (f" (pid {status.pid}, port {status.port})" if status.running else "")
            + f", data in {status.data_dir}"
        )
        raise typer.Exit(0 if status.running else 1)
    url = settings.external_url()
    assert url is not None
    try:
        with connect(url, origin=settings.origin_of_database()) as conn:
            version = server_version(conn)
    except DatabaseError as exc:
        err_console.print(str(exc))
        raise typer.Exit(1) from exc
    console.print(f"PostgreSQL {version} answers ({settings.origin_of_database()})")


@db_app.command("url")
def db_url(
    dagster: Annotated[
        bool, typer.Option("--dagster", help="the URL of Dagster's instance database")
    ] = False,
) -> None:
    """Print a DSN to paste into psql or a BI tool (starts the embedded server if needed)."""
    from xray_pipeline.core.db.session import dagster_storage_url, database_url

    settings = STATE.settings()
    print(dagster_storage_url(settings) if dagster else database_url(settings))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the numbered sql/ files that are not applied yet."""
    from xray_pipeline.core.db.connect import connect
    from xray_pipeline.core.db.migrations import apply_migrations
    from xray_pipeline.core.db.session import database_url

    settings = STATE.settings()
    with connect(database_url(settings), origin=settings.origin_of_database()) as conn:
        applied = apply_migrations(conn)
        conn.commit()
    if applied:
        for migration in applied:
            console.print(f"applied {migration.path.name}")
    else:
        console.print("schema is up to date")


@db_app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def db_psql(ctx: typer.Context) -> None:
    """Open psql on the database; extra arguments go to psql (e.g. -c 'select 1')."""
    from xray_pipeline.core.db.session import database_url, psql_executable

    settings = STATE.settings()
    url = database_url(settings)
    result = subprocess.run([psql_executable(settings), url, *ctx.args], check=False)
    raise typer.Exit(result.returncode)
