"""`xray-pipeline ship`: run on a node of a fleet; ships its access logs to the center."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from xray_pipeline.cli.console import NO_LOGFILE, STATE, LogfileOption, console, err_console
from xray_pipeline.settings import Settings, SettingsError

SYSTEMD_UNIT = """\
# /etc/systemd/system/xray-pipeline-ship.service
# then: systemctl daemon-reload && systemctl enable --now xray-pipeline-ship
[Unit]
Description=xray-pipeline shipper: this node's Xray access log to the center
After=network-online.target
Wants=network-online.target

[Service]
WorkingDirectory={workdir}
ExecStart={command} ship
Environment=XRAY_HOME={home}
# the node's token: `xray-pipeline nodes add NAME` at the center prints it; keep it readable
# by root only (chmod 600) and name it in config.ini [ship] token_file
Restart=always
RestartSec=5
# reads the log, writes only its own state folder
ProtectSystem=full
ReadWritePaths={home}
NoNewPrivileges=true

[Install]
WantedBy=multi-user.target
"""

COMPOSE_SNIPPET = """\
# beside the panel's Xray container (Marzban-node, Remnawave node, 3x-ui): the log folder
# mounted read-only, a checkout of xray-pipeline, the shipper's state in a volume of its own
services:
  xray-pipeline-ship:
    image: python:3.11-slim
    working_dir: /app
    command: sh -c "pip install --quiet uv && uv run --frozen --no-dev xray-pipeline ship"
    restart: always
    environment:
      UV_PROJECT_ENVIRONMENT: /state/venv
      XRAY_HOME: /state
      XRAY_SHIP_CENTRAL: https://center.example:8000
      XRAY_SHIP_NODE: de-fra-1
      XRAY_SHIP_TOKEN_FILE: /run/secrets/xray_ship_token
      XRAY_PARSER_LOGFILE: /logs/access.log
    volumes:
      - ./xray-pipeline:/app:ro
      - /var/lib/marzban-node:/logs:ro   # or /var/log/remnanode, /usr/local/x-ui
      - ship-state:/state
    secrets: [xray_ship_token]
secrets:
  xray_ship_token:
    file: ./xray_ship_token
volumes:
  ship-state:
"""


def _token(settings: Settings) -> str:
    ship = settings.ship
    if ship.token is not None:
        return ship.token.get_secret_value()
    if ship.token_file:
        path = Path(ship.token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise SettingsError(
                f"[ship] token_file {path}: cannot read it ({exc.strerror}); fix the path or "
                "its permissions"
            ) from None
        if token:
            return token
        raise SettingsError(f"[ship] token_file {path} is empty; put the node's token in it")
    raise SettingsError(
        "no node token: set XRAY_SHIP_TOKEN or [ship] token_file (the token that `xray-pipeline "
        "nodes add NAME` printed at the center); it is never a command-line argument"
    )


def ship_cmd(
    logfile: LogfileOption = None,
    central: Annotated[
        str | None, typer.Option("--central", help="the center's API address ([ship] central)")
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="this node's registered name ([ship] node)")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="ship what is there now (and the spool), then exit")
    ] = False,
    print_systemd_unit: Annotated[
        bool, typer.Option("--print-systemd-unit", help="print a systemd unit and exit")
    ] = False,
    print_compose: Annotated[
        bool, typer.Option("--print-compose", help="print a docker compose service and exit")
    ] = False,
) -> None:
    """Follow this node's access logs and ship their complete lines to the center, exactly
    once and in order; while the center is away, keep them in a bounded local spool. Runs
    neither Dagster nor PostgreSQL. The token comes from XRAY_SHIP_TOKEN or [ship] token_file."""
    settings = STATE.settings(
        **{"parser.logfile": logfile, "ship.central": central, "ship.node": node}
    )
    if print_systemd_unit:
        command = Path(sys.argv[0]).resolve()
        console.print(
            SYSTEMD_UNIT.format(workdir=Path.cwd(), command=command, home=settings.home), end=""
        )
        return
    if print_compose:
        console.print(COMPOSE_SNIPPET, end="")
        return
    from xray_pipeline.core.fleet.backlog import Backlog
    from xray_pipeline.core.fleet.nodes import check_name
    from xray_pipeline.core.fleet.shipper import Center, CenterRefused, Shipper, run_forever
    from xray_pipeline.core.runtime.signals import stop_on_signals

    if not settings.logfiles:
        err_console.print(NO_LOGFILE)
        raise typer.Exit(2)
    if not settings.ship.central:
        raise SettingsError("no center: pass --central URL or set [ship] central")
    if not settings.ship.node:
        raise SettingsError("no node name: pass --node NAME or set [ship] node")
    check_name(settings.ship.node)
    try:
        center = Center(settings.ship.central, settings.ship.node, _token(settings))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    spool = Backlog(settings.home / "ship-spool", settings.ship.spool_max_mb * 1024 * 1024)
    files = [Path(p) for p in settings.logfiles]
    shipper = Shipper(
        files,
        center,
        spool,
        max_range_bytes=settings.ship.max_range_bytes,
        state_file=settings.home / "ship-state.json",
        interval=settings.ship.interval,
    )
    err_console.print(
        f"shipping {', '.join(map(str, files))} as node {settings.ship.node} to "
        f"{settings.ship.central}"
    )
    try:
        with stop_on_signals():
            if once:
                stats = shipper.step()
                console.print(
                    f"sent {stats.sent_ranges} ranges ({stats.sent_bytes} bytes); "
                    f"{stats.waiting_bytes} bytes wait in the spool"
                )
                if not stats.online:
                    err_console.print(f"error: {stats.notes[0]}")
                    raise typer.Exit(1)
            else:
                run_forever(shipper, interval=settings.ship.interval)
    except KeyboardInterrupt:
        err_console.print("stopped")
    except CenterRefused as exc:
        hint = {
            401: "the token is unknown at the center: check XRAY_SHIP_TOKEN or [ship] token_file",
            403: "the token is another node's: check [ship] node",
            413: "lower [ship] max_range_bytes below the center's [api] max_range_bytes",
        }.get(exc.status, "see the center's log")
        err_console.print(f"error: the center refused: {exc}; {hint}")
        raise typer.Exit(1) from None
    finally:
        center.close()
