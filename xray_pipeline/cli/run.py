"""`xray-pipeline up`, `demo` and `serve`: the long-running services."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xray_pipeline.cli.console import NO_LOGFILE, STATE, LogfileOption, console, err_console
from xray_pipeline.cli.ingest import export_run_stats
from xray_pipeline.settings import Settings

if TYPE_CHECKING:  # imported by the commands that run them: the CLI starts faster
    from xray_pipeline.core.runtime.demo import Demo
    from xray_pipeline.core.runtime.supervisor import Running

HostOption = Annotated[str, typer.Option("--host", help="Dagster UI address")]
PortOption = Annotated[int, typer.Option("--port", help="Dagster UI port")]
ReadyTimeoutOption = Annotated[
    float, typer.Option("--ready-timeout", help="seconds to wait for the first sensor tick")
]
ApiPortOption = Annotated[
    int, typer.Option("--api-port", help="port of the API and dashboard (0: none)")
]


def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8000,
) -> None:
    """Run the API sidecar and its dashboard (at /, API docs at /docs); read-only, optional
    bearer token (XRAY_API_TOKEN)."""
    import uvicorn

    from xray_pipeline.api.main import create_app
    from xray_pipeline.core.archive.store import configured_store
    from xray_pipeline.core.db.session import api_database_url, database_url
    from xray_pipeline.core.runtime.processes import port_free

    if not port_free(host, port):
        err_console.print(f"error: port {port} on {host} is in use; choose another with --port")
        raise typer.Exit(1)
    settings = STATE.settings()
    app_ = create_app(
        api_database_url(settings),
        token=settings.api_token,
        cors_origins=settings.api.cors_origins,
        statement_timeout_ms=settings.api.statement_timeout_ms,
        timezone=settings.timezone,
        landing_dir=settings.landing_dir,
        archive=configured_store(settings),
        max_range_bytes=settings.api.max_range_bytes,
        admin_token=(
            settings.api.admin_token.get_secret_value() if settings.api.admin_token else None
        ),
        admin_database_url=database_url(settings) if settings.api.admin_token else None,
    )
    console.print(f"dashboard: http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _run_services(
    settings: Settings,
    logfiles: list[str],
    *,
    host: str,
    port: int,
    ready_timeout: float,
    api_port: int | None = None,
    demo: "Demo | None" = None,
) -> None:
    """Dagster webserver + daemon, the API sidecar (and the demo generator and nodes) until
    Ctrl-C or SIGTERM; ready at the first sensor tick."""
    from xray_pipeline.core.runtime import supervisor as services
    from xray_pipeline.core.runtime.processes import port_free
    from xray_pipeline.core.runtime.signals import stop_on_signals

    if demo is None and (hint := settings.timezone_hint()):  # demo: its own clock
        err_console.print(f"note: {hint}")

    def check_ports() -> None:
        for what, number, flag in (
            ("the Dagster UI", port, "--port"),
            ("the API", api_port, "--api-port"),
        ):
            if number and not port_free(host, number):
                err_console.print(
                    f"error: port {number} on {host} is in use, so {what} could not listen "
                    f"there; choose another with {flag}"
                )
                raise typer.Exit(1)

    try:
        with (
            stop_on_signals(),
            services.supervised(
                settings,
                logfiles,
                host=host,
                port=port,
                api_port=api_port,
                demo=demo,
                before_start=check_ports,
            ) as running,
        ):
            try:
                _until_stopped(settings, running, host, port, api_port, ready_timeout)
            except KeyboardInterrupt:
                console.print("stopping ...")
    except services.AlreadyRunning as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:  # while starting
        console.print("stopping ...")
    console.print("stopped; no process left running")


def _until_stopped(
    settings: Settings,
    running: "Running",
    host: str,
    port: int,
    api_port: int | None,
    ready_timeout: float,
) -> None:
    """Say where everything is, wait for the first sensor tick, then for the end."""
    from xray_pipeline.core.runtime import supervisor as services

    proc, log_file = running.dagster, running.dagster_log
    if (demo := running.demo) is not None:
        writer = "a local V2Ray writes a line per connection" if demo.v2ray else "appending"
        console.print(f"demo: {writer}, {demo.rate:g} lines/s, to {demo.log}")
        for name, log in demo.node_logs.items():
            console.print(
                f"demo: node {name} ships {log} to the sidecar ({demo.rate:g} lines/s; its log: "
                f"{log.parent / 'ship.log'})"
            )
    console.print(f"Dagster UI: http://{host}:{port}  (logs: {log_file})")
    if running.api is not None:
        console.print(
            f"dashboard: http://{host}:{api_port}/  (API docs: http://{host}:{api_port}/docs)"
        )
    console.print("waiting for the first sensor tick ...")
    if services.wait_ready(settings, proc, timeout=ready_timeout):
        console.print(
            "ready: access_log_sensor is ticking; runs and daily partitions of `logs` "
            "appear in the UI. Ctrl-C stops everything."
        )
    elif proc.poll() is not None:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        err_console.print("error: dagster dev exited:\n" + "\n".join(tail))
        raise typer.Exit(1)
    else:
        err_console.print(f"warning: no sensor tick after {ready_timeout:.0f} s; see {log_file}")
    while proc.poll() is None:
        time.sleep(0.5)
    err_console.print(f"dagster dev exited with code {proc.returncode}; see {log_file}")
    raise typer.Exit(1)


def up_cmd(
    logfile: LogfileOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 3000,
    ready_timeout: ReadyTimeoutOption = 180,
    api_port: ApiPortOption = 8000,
) -> None:
    """Run the pipeline on real logs: the database, the Dagster UI and daemon with
    access_log_sensor watching the files (and the ranges the fleet's nodes land at this
    center, through the API sidecar), until Ctrl-C or SIGTERM."""
    settings = STATE.settings(**{"parser.logfile": logfile})
    if not settings.logfiles:
        if not settings.landing_dir.is_dir():
            err_console.print(
                NO_LOGFILE + " (a center of a fleet: `xray-pipeline nodes add NAME` first)"
            )
            raise typer.Exit(2)
        err_console.print(
            f"no local log file: loading what the nodes land in {settings.landing_dir}"
        )
    _run_services(
        settings,
        list(settings.logfiles),
        host=host,
        port=port,
        ready_timeout=ready_timeout,
        api_port=api_port or None,
    )


def demo_cmd(
    rate: Annotated[
        float, typer.Option("--rate", help="generated lines per second appended to the demo log")
    ] = 20.0,
    once: Annotated[
        bool,
        typer.Option("--once", help="no Dagster: append --lines lines, load them, print, exit"),
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="with --once: lines to append", min=0)
    ] = 20_000,
    host: HostOption = "127.0.0.1",
    port: PortOption = 3000,
    ready_timeout: ReadyTimeoutOption = 180,
    api_port: ApiPortOption = 8000,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            min=0,
            max=20,
            help="demo nodes of a fleet: each a generator and an `xray-pipeline ship` process "
            "shipping to the sidecar (0: none; needs the API)",
        ),
    ] = 2,
    v2ray: Annotated[
        bool,
        typer.Option(
            "--v2ray",
            help="the demo log written by a real local V2Ray (Debian's `v2ray`) serving --rate "
            "real connections a second, instead of the generator",
        ),
    ] = False,
) -> None:
    """The main job on the embedded database: a generator appends realistic lines to a demo
    log and Dagster's access_log_sensor loads them, day by day, until Ctrl-C; demo nodes of a
    fleet ship theirs to this center. Without [geoip] databases configured, the demo writes
    synthetic ones that place its generated addresses (the dashboard says they are made up)."""
    if v2ray and once:
        err_console.print("error: --v2ray drives the live demo; --once loads generated lines")
        raise typer.Exit(2)
    if v2ray:
        from xray_pipeline.core.synthetic.v2ray import INSTALL_HINT, v2ray_executable

        if v2ray_executable() is None:
            err_console.print(f"error: --v2ray: {INSTALL_HINT}")
            raise typer.Exit(2)
    settings = _with_demo_geoip(STATE.settings())
    if once:
        _demo_once(settings, lines)
        return
    if nodes and not api_port:
        err_console.print("note: demo nodes ship to the API sidecar, which --api-port 0 turns off")
        nodes = 0
    from xray_pipeline.core.runtime.demo import Demo

    log = settings.home / "demo" / ("v2ray-access.log" if v2ray else "access.log")
    demo = Demo.of(settings, log, rate=rate, nodes=nodes, v2ray=v2ray)
    _run_services(
        settings,
        [str(demo.log)],
        host=host,
        port=port,
        ready_timeout=ready_timeout,
        api_port=api_port or None,
        demo=demo,
    )


def _with_demo_geoip(settings: Settings) -> Settings:
    """`settings`, with the synthetic country and ASN databases when none is configured."""
    if settings.geoip.country_db or settings.geoip.asn_db:
        return settings
    from xray_pipeline.core.synthetic.mmdb import write_synthetic_geoip

    country, asn = write_synthetic_geoip(settings.home / "demo" / "geoip")
    console.print(f"synthetic country and ASN databases (made-up places): {country.parent}")
    return STATE.settings(**{"geoip.country_db": str(country), "geoip.asn_db": str(asn)})


def _demo_once(settings: Settings, lines: int) -> None:
    """Append generated lines to the demo log, load them, show what the database holds."""
    import datetime as dt
    import zoneinfo

    from xray_pipeline.core.db.partitions import list_partitions
    from xray_pipeline.core.db.rollups import row_totals
    from xray_pipeline.core.db.session import database_url, session
    from xray_pipeline.core.ingest.oneshot import ingest_files
    from xray_pipeline.core.privacy.policy import policy_from_settings
    from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

    log = settings.home / "demo" / "access.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(zoneinfo.ZoneInfo(settings.timezone)).replace(tzinfo=None)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if lines:
        seed = int(now.timestamp())
        write_log(GeneratorConfig(lines=lines, start=start, seed=seed), log, append=True)
        console.print(f"appended {lines:,} generated lines for {start:%Y-%m-%d} to {log}")
    with session(settings) as conn:
        stats = ingest_files(
            conn,
            [Path(log)],
            timezone=settings.timezone,
            batch_size=settings.batch_size,
            policy=policy_from_settings(settings),
        )
        if stats_error := export_run_stats(stats, settings):
            err_console.print(f"warning: {stats_error}")
        console.print(
            f"loaded {stats.lines:,} new lines: {stats.access_rows:,} access, "
            f"{stats.dns_rows:,} dns, {stats.rejects:,} rejects in {stats.duration_s:.1f} s"
        )
        totals = row_totals(conn)
        conn.commit()
        console.print(
            f"database: {totals['logs']:,} logs rows, {totals['dns_queries']:,} dns rows, "
            f"{totals['rejects']:,} rejects, {totals['users']:,} users; partitions: "
            + ", ".join(name for name, _ in list_partitions(conn))
        )
    console.print(f"query it: psql {database_url(settings)}")
