"""`xray-pipeline config`: the effective settings and where each came from."""

import typer
from rich.table import Table

from xray_pipeline.cli.console import STATE, console
from xray_pipeline.settings import describe, reference

config_app = typer.Typer(help="Inspect the effective settings.", rich_markup_mode=None)


@config_app.command("show")
def config_show() -> None:
    """Print every effective setting, where it came from, secrets masked (a table on a
    terminal, a line each when piped)."""
    settings = STATE.settings()
    rows = list(describe(settings))
    if not console.is_terminal:  # piped: one line a setting, whole, for grep and diff
        console.print(f"# settings (config file: {settings.config_path or 'none'})")
        for name, shown, origin in rows:
            console.print(f"{name} = {shown}  # {origin}", soft_wrap=True, markup=False)
    else:
        table = Table(title=f"settings (config file: {settings.config_path or 'none'})")
        table.add_column("setting")
        table.add_column("value")
        table.add_column("from")
        for name, shown, origin in rows:
            table.add_row(name, shown, origin)
        console.print(table)
    console.print(f"database: {settings.origin_of_database()}")


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md) as Markdown."""
    print(reference(), end="")
