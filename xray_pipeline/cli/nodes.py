"""`xray-pipeline nodes`: the fleet's node registry at the center."""

import datetime as dt
from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console

nodes_app = typer.Typer(
    help="Register the Xray nodes that ship their logs to this center.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArg = Annotated[str, typer.Argument(help="node name: letters, digits, '-', '_', '.'")]


@nodes_app.command("add")
def nodes_add(name: NameArg) -> None:
    """Register a node and print its token, once (only a hash of it is kept)."""
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.fleet.nodes import NodeError, add_node

    settings = STATE.settings()
    try:
        with session(settings) as conn:
            token = add_node(conn, name)
    except NodeError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(2) from None
    settings.landing_dir.mkdir(parents=True, exist_ok=True)  # `up` serves the fleet from now
    err_console.print(f"node {name} registered; its token (shown only this once):")
    console.print(token)


@nodes_app.command("remove")
def nodes_remove(name: NameArg) -> None:
    """Unregister a node: its token stops working; the rows it shipped stay."""
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.fleet.nodes import remove_node

    with session(STATE.settings()) as conn:
        removed = remove_node(conn, name)
    if not removed:
        err_console.print(f"error: no node named {name!r}; `xray-pipeline nodes list` shows them")
        raise typer.Exit(1)
    console.print(f"node {name} removed; its token no longer works, its rows stay")


@nodes_app.command("list")
def nodes_list() -> None:
    """The registered nodes: last contact, shipper version, lag of the newest loaded line,
    lines and bytes loaded today, bytes landed and not loaded yet."""
    from rich.table import Table

    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.fleet.landing import last_contact, waiting_bytes
    from xray_pipeline.core.fleet.nodes import list_nodes

    settings = STATE.settings()
    with session(settings) as conn:
        nodes = list_nodes(conn, settings.timezone)
    if not nodes:
        console.print("no node registered; `xray-pipeline nodes add NAME` registers one")
        return
    now = dt.datetime.now(dt.UTC)

    def ago(value: dt.datetime | None) -> str:
        if value is None:
            return "never"
        seconds = max(0.0, (now - value).total_seconds())
        if seconds < 90:
            return f"{seconds:.0f} s ago"
        if seconds < 5400:
            return f"{seconds / 60:.0f} min ago"
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%MZ")

    table = Table(box=None, pad_edge=False)
    table.add_column("node", no_wrap=True)
    for column in ("last contact", "shipper", "lag"):
        table.add_column(column, no_wrap=True)
    for column in ("lines today", "bytes today", "bytes waiting"):
        table.add_column(column, justify="right", no_wrap=True)
    for node in nodes:
        lag = node.lag_seconds(now)
        contact, version = last_contact(settings.landing_dir, node.name)
        waiting = waiting_bytes(settings.landing_dir, node.name, node.loaded_by_path)
        table.add_row(
            node.name,
            ago(contact),
            (version or "-").removeprefix("xray-pipeline-ship/"),
            "-" if lag is None else f"{lag:.0f} s",
            f"{node.lines_today:,}",
            f"{node.bytes_today:,}",
            f"{waiting:,}",
        )
    console.print(table)
