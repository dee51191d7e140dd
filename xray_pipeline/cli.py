"""The `xray-pipeline` command: subcommands call core/ and defs/."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger
from rich.console import Console
from rich.table import Table

from xray_pipeline.log import configure_logging
from xray_pipeline.settings import Settings, SettingsError, describe, load_settings

app = typer.Typer(
    name="xray-pipeline",
    help="Keep every Xray/V2Ray access-log line, exactly once, in partitioned PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Manage the database: the embedded server and the schema.", rich_markup_mode=None
)
config_app = typer.Typer(help="Inspect the effective settings.", rich_markup_mode=None)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")

console = Console(soft_wrap=True, markup=False, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


@dataclass
class State:
    config: Path | None = None
    overrides: dict | None = None
    verbose: bool = False

    def settings(self, **extra: object) -> Settings:
        overrides = {**(self.overrides or {}), **{k: v for k, v in extra.items() if v}}
        return load_settings(self.config, overrides)


STATE = State()

LogfileOption = Annotated[
    list[str] | None,
    typer.Option("--logfile", "-l", help="log file or glob (repeatable; default [parser] logfile)"),
]


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
    configure_logging(settings.get("general.log_level"), json_lines=log_json)


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show() -> None:
    """Print every effective setting, where it came from, secrets masked."""
    settings = STATE.settings()
    table = Table(title=f"settings (config file: {settings.config_path or 'none'})")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from")
    for name, shown, origin in describe(settings):
        table.add_row(name, shown, origin)
    console.print(table)
    console.print(f"database: {settings.origin_of_database()}")


# --------------------------------------------------------------------------- db


def _embedded_or_exit(settings: Settings):
    from xray_pipeline.core.pg import embedded_server

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
    from xray_pipeline.core.pg import DatabaseError, connect, embedded_server

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
            version = conn.execute("SHOW server_version").fetchone()[0]
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
    from xray_pipeline.core.pg import dagster_storage_url, database_url

    settings = STATE.settings()
    print(dagster_storage_url(settings) if dagster else database_url(settings))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the numbered sql/ files that are not applied yet."""
    from xray_pipeline.core.pg import apply_migrations, connect, database_url

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
    from xray_pipeline.core.pg import database_url, psql_executable

    settings = STATE.settings()
    url = database_url(settings)
    result = subprocess.run([psql_executable(settings), url, *ctx.args], check=False)
    raise typer.Exit(result.returncode)


# --------------------------------------------------------------------------- serve


def api_database_url(settings: Settings) -> str:
    """[api] database_url, else the configured database as the read-only `xray_api` role."""
    from xray_pipeline.core.pg import database_url, session, with_database

    if settings.get("api.database_url"):
        return settings.get("api.database_url")
    with session(settings) as conn:  # applies the migrations, which create the role
        has_role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'xray_api'").fetchone()
        dbname = conn.info.dbname
    url = database_url(settings)
    if not has_role or not settings.uses_embedded:
        # an external server wants a password for the role: use [api] database_url for it
        return url
    return with_database(url, dbname).replace("://postgres@", "://xray_api@", 1)


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8000,
) -> None:
    """Run the API sidecar and its dashboard (at /, API docs at /docs); read-only, optional
    bearer token (XRAY_API_TOKEN)."""
    import uvicorn

    from xray_pipeline.api.main import create_app

    if not _port_free(host, port):
        err_console.print(f"error: port {port} on {host} is in use; choose another with --port")
        raise typer.Exit(1)
    settings = STATE.settings()
    app_ = create_app(
        api_database_url(settings),
        token=settings.get("api.token"),
        cors_origins=settings.get("api.cors_origins"),
        statement_timeout_ms=settings.get("api.statement_timeout_ms"),
        timezone=settings.timezone,
    )
    console.print(f"dashboard: http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


# --------------------------------------------------------------------------- migrate


@app.command("migrate")
def migrate_cmd(
    drop_old: Annotated[
        bool | None,
        typer.Option("--drop-old/--keep-old", help="drop the legacy tables once all days verified"),
    ] = None,
    batch_days: Annotated[
        int, typer.Option("--batch-days", help="days whose partitions are prepared at once", min=1)
    ] = 7,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be done")] = False,
) -> None:
    """Move a legacy `logs` table (the original tool's, plain or partitioned) to this schema,
    day by day, resumable, verified; the database stays usable meanwhile."""
    from xray_pipeline.core.migrate import MigrationError, migrate, plan
    from xray_pipeline.core.pg import session

    settings = STATE.settings(**{"migration.drop_old": drop_old})
    with session(settings, upgrade=False) as conn:
        if dry_run:
            report = plan(conn, settings.timezone)
            _say_layout(report.layout)
            if report.days_total:
                console.print(
                    f"dry run: would move {report.rows_total:,} rows over "
                    f"{report.days_total} days; nothing was changed"
                )
            return
        with _progress() as progress:

            def on_day(result, done: int, total: int) -> None:
                if progress.bar is None and sys.stderr.isatty():
                    progress.total(0, force=total)
                progress.advance(1)

            try:
                report = migrate(
                    conn,
                    timezone=settings.timezone,
                    batch_days=batch_days,
                    drop_old=settings.get("migration.drop_old"),
                    on_day=on_day,
                )
            except MigrationError as exc:
                err_console.print(f"error: {exc}")
                raise typer.Exit(1) from exc
    _say_layout(report.layout)
    if report.days:
        table = Table(title="migrated days")
        for column in ("day", "rows", "seconds"):
            table.add_column(column)
        for day in report.days:
            table.add_row(day.day.isoformat(), f"{day.rows:,}", f"{day.seconds:.2f}")
        console.print(table)
    if report.layout not in ("ours", "empty"):
        console.print(
            f"{report.rows_total:,} rows over {report.days_total} days verified "
            f"({report.days_done_before} were done by an earlier run)"
            + (
                "; legacy tables dropped"
                if report.dropped_old
                else "; legacy tables kept as legacy_* (--drop-old drops them)"
            )
        )


def _say_layout(layout: str) -> None:
    console.print({
        "ours": "the database already has the partitioned schema: nothing to migrate",
        "empty": "no logs table: the schema is created, nothing to migrate",
        "legacy": "found the original tool's unpartitioned logs table",
        "legacy_partitioned": "found the original tool's partitioned logs table",
        "in_progress": "resuming a migration (legacy tables renamed aside as legacy_*)",
    }[layout])  # fmt: skip


# --------------------------------------------------------------------------- parse / generate


class OutputFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    table = "table"


@app.command("parse")
def parse_cmd(
    files: Annotated[list[str], typer.Argument(help="log files to parse; - reads stdin")],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="jsonl, csv or table")
    ] = OutputFormat.jsonl,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="zone of the Xray clock (default: settings)")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="bytes parsed at a time", min=1024)
    ] = 4 * 1024 * 1024,
) -> None:
    """Dry run: print what the pipeline would store, one record per input line, in order.

    Fields are the spec's canonical ones (ts as printed, without zone; kind = access, dns or
    other; fields that do not apply are null) plus `line_no`. Nothing is written anywhere.
    """
    import csv
    import json

    from xray_pipeline.core.parse import parse_chunk
    from xray_pipeline.core.schema import CANONICAL_FIELDS
    from xray_pipeline.core.tail import iter_chunks, open_log

    settings = STATE.settings(**{"parser.timezone": timezone})
    fields = ["line_no", *CANONICAL_FIELDS]
    out = sys.stdout
    writer = (
        csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        if (output_format is OutputFormat.csv)
        else None
    )
    if writer:
        writer.writeheader()
    for name in files:
        handle = sys.stdin.buffer if name == "-" else None
        try:
            fh = handle or open_log(Path(name))
        except OSError as exc:
            err_console.print(f"error: cannot read {name}: {exc.strerror}")
            raise typer.Exit(1) from exc
        line_base = 0
        with fh if handle is None else _nullcontext(fh):
            for offset, chunk in iter_chunks(fh, batch_size):
                parsed = parse_chunk(
                    chunk, source=name, base_offset=offset, timezone=settings.timezone
                )
                frame = parsed.lines.with_columns(pl_col_add("line_no", line_base))
                line_base += parsed.line_count
                if output_format is OutputFormat.table:
                    _print_table(frame.select(fields))
                    continue
                for record in frame.select(fields).iter_rows(named=True):
                    if writer:
                        writer.writerow(record)
                    else:
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def pl_col_add(name: str, value: int):
    import polars as pl

    return pl.col(name) + value


def _print_table(frame) -> None:
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=400):
        console.print(str(frame))


class _nullcontext:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return None


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="log file to write")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="number of lines", min=0)] = 10_000,
    days: Annotated[int, typer.Option("--days", help="days the lines span", min=1)] = 1,
    start: Annotated[
        str, typer.Option("--start", help="first day, YYYY-MM-DD (local time of the log)")
    ] = "2025-11-17",
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 42,
    users: Annotated[int, typer.Option("--users", help="distinct users", min=1)] = 200,
    other_share: Annotated[
        float,
        typer.Option("--other-share", help="share of lines in the non-modern shapes", min=0, max=1),
    ] = 0.15,
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="also write what each line must parse to (JSON lines)"),
    ] = None,
    append: Annotated[bool, typer.Option("--append", help="append instead of overwrite")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="after --lines, append at --rate forever (Ctrl-C)")
    ] = False,
    rate: Annotated[
        float, typer.Option("--rate", help="lines per second with --follow", min=0)
    ] = 50.0,
) -> None:
    """Write a synthetic, realistic access log (every shape of the spec, time-ordered)."""
    import datetime as dt

    from xray_pipeline.core.generate import GeneratorConfig, write_log
    from xray_pipeline.core.generate import follow as follow_log

    try:
        first_day = dt.datetime.strptime(start, "%Y-%m-%d")
    except ValueError as exc:
        err_console.print(f"error: --start {start!r} is not a date like 2025-11-17")
        raise typer.Exit(2) from exc
    cfg = GeneratorConfig(
        lines=lines, days=days, start=first_day, seed=seed, users=users, other_share=other_share
    )
    written = write_log(cfg, out, truth=truth, append=append) if lines else 0
    err_console.print(f"wrote {lines:,} lines ({written:,} bytes) to {out}")
    if follow:
        settings = STATE.settings()
        err_console.print(f"appending {rate:g} lines/s to {out}; Ctrl-C stops")
        try:
            for _ in follow_log(
                out,
                rate=rate,
                timezone=settings.timezone,
                seed=seed,
                users=users,
                other_share=other_share,
            ):
                pass
        except KeyboardInterrupt:
            err_console.print("stopped")


# --------------------------------------------------------------------------- ingest


@app.command("ingest")
def ingest_cmd(
    logfile: LogfileOption = None,
    from_start: Annotated[
        bool,
        typer.Option("--from-start", help="also load holes before the last loaded byte"),
    ] = False,
    node: Annotated[
        str | None, typer.Option("--node", help="node name stored with the rows")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="bytes per chunk", min=4096)
    ] = None,
) -> None:
    """Load what is new in each log file since the last run, exactly once; print statistics.

    The source files are never modified. Running it again loads nothing new; two runs at
    once on the same file are safe (the second leaves the file to the first).
    """
    from xray_pipeline.core.ingest import (
        LocalOffsets,
        expand_paths,
        ingest_files,
        remember_offsets,
        spool_files,
        unreadable_reason,
    )
    from xray_pipeline.core.pg import DatabaseUnavailable, session
    from xray_pipeline.core.spool import SpoolFull, spooled_ranges

    settings = STATE.settings(
        **{"parser.logfile": logfile, "parser.node": node, "parser.batch_size": batch_size}
    )
    if not settings.logfiles:
        err_console.print(
            "error: no log file given; pass --logfile PATH or set [parser] logfile in config.ini"
        )
        raise typer.Exit(2)
    if hint := settings.timezone_hint():
        err_console.print(f"note: {hint}")
    paths = expand_paths(settings.logfiles)
    offsets = LocalOffsets(settings.home / "offsets.json")
    spooler = _spooler(settings)
    try:
        with session(settings) as conn, _progress() as progress:
            _replay_waiting(conn, settings)
            stats = ingest_files(
                conn,
                paths,
                timezone=settings.timezone,
                batch_size=settings.batch_size,
                node=settings.node,
                from_start=from_start,
                on_total=progress.total,
                on_progress=progress.advance,
                spooler=spooler,
            )
            if stats.mode == "online":
                remember_offsets(conn, offsets)
    except DatabaseUnavailable as exc:
        err_console.print(f"warning: {exc}")
        err_console.print("PostgreSQL is unreachable: parsing into the offline spool instead")
        try:
            stats = spool_files(
                paths,
                spooler=spooler,
                spooled=spooled_ranges(settings.spool_dir),
                known=offsets.read(),
                timezone=settings.timezone,
                batch_size=settings.batch_size,
                node=settings.node,
            )
        except SpoolFull as full:
            err_console.print(f"warning: {full}")
            raise typer.Exit(0) from full
    except SpoolFull as full:  # PostgreSQL went away during the run, and the spool is full
        err_console.print(f"warning: {full}")
        raise typer.Exit(0) from full
    stats_error = _export_stats(stats, settings)
    err_console.print(
        f"{stats.lines:,} lines loaded ({stats.access_rows:,} access, {stats.dns_rows:,} dns, "
        f"{stats.rejects:,} rejects)"
        + (f", {stats.spooled_lines:,} lines spooled" if stats.spooled_lines else "")
        + f" from {stats.bytes:,} bytes in {stats.duration_s:.1f} s"
        + (
            f"; {stats.chunks_already_loaded} chunk(s) were already loaded"
            if stats.chunks_already_loaded
            else ""
        )
        + (
            f"; statistics appended to {settings.stats_output}"
            if settings.stats_output != "-" and not stats_error
            else ""
        )
    )
    if stats.spooled_chunks:
        err_console.print(
            f"warning: {stats.spooled_lines:,} lines in {stats.spooled_chunks} segment(s) wait "
            f"in {settings.spool_dir} (mode: offline); they load with `xray-pipeline replay` "
            "or the next ingest once PostgreSQL answers"
        )
    unreadable = [why for why in map(unreadable_reason, paths) if why]
    for why in [*unreadable, *([stats_error] if stats_error else [])]:
        err_console.print(f"error: {why}")
    if unreadable or stats_error:
        raise typer.Exit(1)  # what could be loaded was loaded all the same


def _export_stats(stats, settings: Settings) -> str | None:
    """Append the run's statistics; what went wrong, naming the setting, or None."""
    from xray_pipeline.core.ingest import export_stats

    try:
        export_stats(stats, settings.stats_output, settings.stats_format)
    except OSError as exc:
        return (
            f"cannot write the run statistics to {settings.stats_output}: "
            f"{exc.strerror or exc}; the lines were loaded. Fix [stats] output "
            "(XRAY_STATS_OUTPUT), or set it to - to print them"
        )
    return None


def _spooler(settings: Settings):
    from xray_pipeline.core.spool import write_segment

    limit = settings.get("parser.spool_max_mb") * 1024 * 1024

    def spool(parsed, source):
        return write_segment(
            settings.spool_dir,
            parsed,
            identity=source.identity,
            source_path=source.path,
            node=source.node or settings.node,
            timezone=settings.timezone,
            max_bytes=limit,
        )

    return spool


def _replay_waiting(conn, settings: Settings) -> tuple[int, int]:
    """Replay the waiting segments; (segments, lines) loaded."""
    from xray_pipeline.core.spool import replay

    done = lines = 0
    for segment, results, damaged in replay(conn, settings.spool_dir):
        if damaged:
            err_console.print(
                f"warning: {segment.path.name} is damaged; kept aside in "
                f"{settings.spool_dir / 'corrupt'} (nothing of it was loaded)"
            )
            continue
        done += 1
        lines += sum(r.lines for r in results)
    if done:
        err_console.print(f"replayed {done} spooled segment(s): {lines:,} lines loaded")
    return done, lines


@app.command("replay")
def replay_cmd() -> None:
    """Load the segments spooled while PostgreSQL was down (exactly once; safe to repeat)."""
    from xray_pipeline.core.pg import session

    settings = STATE.settings()
    with session(settings) as conn:
        done, _ = _replay_waiting(conn, settings)
    if not done:
        console.print(f"nothing waits in {settings.spool_dir}")


spool_app = typer.Typer(help="The offline spool.", rich_markup_mode=None)
app.add_typer(spool_app, name="spool")


@spool_app.command("status")
def spool_status() -> None:
    """List the segments waiting in the offline spool."""
    from xray_pipeline.core.spool import describe, spool_size

    settings = STATE.settings()
    rows = describe(settings.spool_dir)
    if not rows:
        console.print(f"the spool {settings.spool_dir} is empty")
        return
    table = Table(title=f"{settings.spool_dir}: {spool_size(settings.spool_dir) / 1e6:,.1f} MB")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


class _progress:
    """A rich progress bar on a terminal for large reads; silent elsewhere (CI, pipes)."""

    def __init__(self) -> None:
        self.bar = None
        self.task = None

    def __enter__(self) -> "_progress":
        return self

    def total(self, total: int, *, force: int | None = None) -> None:
        """A bar for `total` bytes when large, or for `force` items (days) on a terminal."""
        if not sys.stderr.isatty():
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TimeRemainingColumn,
        )

        if force is not None:
            self.bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=err_console)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("migrating days", total=force)
        elif total > 16 * 1024 * 1024:
            self.bar = Progress(
                "{task.description}",
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err_console,
            )
            self.bar.start()
            self.task = self.bar.add_task("loading", total=total)

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, nbytes)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------- demo


def _demo_once(settings: Settings, lines: int) -> None:
    """Append generated lines to the demo log, load them, show what the database holds."""
    import datetime as dt
    import zoneinfo

    from xray_pipeline.core.generate import GeneratorConfig, write_log
    from xray_pipeline.core.ingest import ingest_files
    from xray_pipeline.core.pg import database_url, list_partitions, session

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
            conn, [log], timezone=settings.timezone, batch_size=settings.batch_size
        )
        if stats_error := _export_stats(stats, settings):
            err_console.print(f"warning: {stats_error}")
        console.print(
            f"loaded {stats.lines:,} new lines: {stats.access_rows:,} access, "
            f"{stats.dns_rows:,} dns, {stats.rejects:,} rejects in {stats.duration_s:.1f} s"
        )
        totals = conn.execute(
            "SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM dns_queries), "
            "(SELECT count(*) FROM rejects), (SELECT count(*) FROM users)"
        ).fetchone()
        conn.commit()
        console.print(
            f"database: {totals[0]:,} logs rows, {totals[1]:,} dns rows, {totals[2]:,} rejects, "
            f"{totals[3]:,} users; partitions: "
            + ", ".join(name for name, _ in list_partitions(conn))
        )
    console.print(f"query it: psql {database_url(settings)}")


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as the servers do: a port left in TIME_WAIT by the last run is free to them
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _run_services(
    settings: Settings,
    logfiles: list[str],
    *,
    host: str,
    port: int,
    ready_timeout: float,
    api_port: int | None = None,
    demo_rate: float | None = None,
) -> None:
    """Dagster webserver + daemon, the API sidecar (and the demo generator) until Ctrl-C or
    SIGTERM."""
    import signal
    import threading

    from xray_pipeline.core import services
    from xray_pipeline.core.generate import follow
    from xray_pipeline.core.pg import embedded_server, session

    if demo_rate is None and (hint := settings.timezone_hint()):  # demo: its own clock
        err_console.print(f"note: {hint}")
    lock = services.InstanceLock(settings.home / "up.pid")
    try:
        lock.acquire()
    except services.AlreadyRunning as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(1) from exc
    for what, number, flag in (
        ("the Dagster UI", port, "--port"),
        ("the API", api_port, "--api-port"),
    ):
        if number and not _port_free(host, number):
            lock.release()
            err_console.print(
                f"error: port {number} on {host} is in use, so {what} could not listen there; "
                f"choose another with {flag}"
            )
            raise typer.Exit(1)
    started_db = False
    proc = None
    api_proc = None
    stop = threading.Event()
    generator = None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # SIGINT as well: started with `&` from a script, this process inherits an ignored SIGINT
    # (and Python then leaves it ignored), yet `kill -INT` should stop it like Ctrl-C does
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if settings.uses_embedded:
            started_db = not embedded_server(settings).status().running
        with session(settings) as conn:
            conn.commit()
        if demo_rate is not None:
            log = Path(logfiles[0])
            log.parent.mkdir(parents=True, exist_ok=True)

            def write_forever() -> None:
                for _ in follow(log, rate=demo_rate, timezone=settings.timezone):
                    if stop.is_set():
                        return

            generator = threading.Thread(target=write_forever, name="demo-generator", daemon=True)
            generator.start()
            console.print(f"demo: appending {demo_rate:g} generated lines/s to {log}")
        log_file = settings.home / "dagster" / "dagster-dev.log"
        proc = services.start_dagster(
            settings,
            host=host,
            port=port,
            extra_env=services.child_env(settings, logfiles),
            log_file=log_file,
        )
        console.print(f"Dagster UI: http://{host}:{port}  (logs: {log_file})")
        if api_port:
            api_proc = services.start_api(
                settings, host=host, port=api_port, log_file=settings.home / "api.log"
            )
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
            err_console.print(
                f"warning: no sensor tick after {ready_timeout:.0f} s; see {log_file}"
            )
        while proc.poll() is None:
            time.sleep(0.5)
        err_console.print(f"dagster dev exited with code {proc.returncode}; see {log_file}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        stop.set()
        if proc is not None:
            services.stop_group(proc)
        if api_proc is not None:
            services.stop_group(api_proc)
        if generator is not None:
            generator.join(timeout=5)
        if started_db:
            embedded_server(settings).stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()
    console.print("stopped; no process left running")


@app.command("up")
def up_cmd(
    logfile: LogfileOption = None,
    host: Annotated[str, typer.Option("--host", help="Dagster UI address")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Dagster UI port")] = 3000,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="seconds to wait for the first sensor tick")
    ] = 180,
    api_port: Annotated[
        int, typer.Option("--api-port", help="port of the API and dashboard (0: none)")
    ] = 8000,
) -> None:
    """Run the pipeline on real logs: the database, the Dagster UI and daemon with
    access_log_sensor watching the files, until Ctrl-C or SIGTERM."""
    settings = STATE.settings(**{"parser.logfile": logfile})
    if not settings.logfiles:
        err_console.print(
            "error: no log file given; pass --logfile PATH or set [parser] logfile in config.ini"
        )
        raise typer.Exit(2)
    _run_services(
        settings,
        list(settings.logfiles),
        host=host,
        port=port,
        ready_timeout=ready_timeout,
        api_port=api_port or None,
    )


@app.command("demo")
def demo(
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
    host: Annotated[str, typer.Option("--host", help="Dagster UI address")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Dagster UI port")] = 3000,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="seconds to wait for the first sensor tick")
    ] = 180,
    api_port: Annotated[
        int, typer.Option("--api-port", help="port of the API and dashboard (0: none)")
    ] = 8000,
) -> None:
    """The main job on the embedded database: a generator appends realistic lines to a demo
    log and Dagster's access_log_sensor loads them, day by day, until Ctrl-C."""
    settings = STATE.settings()
    if once:
        _demo_once(settings, lines)
        return
    log = settings.home / "demo" / "access.log"
    _run_services(
        settings,
        [str(log)],
        host=host,
        port=port,
        ready_timeout=ready_timeout,
        api_port=api_port or None,
        demo_rate=rate,
    )


# --------------------------------------------------------------------------- entry point


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

    from xray_pipeline.core.pg import DatabaseError

    try:
        app()
    except (SettingsError, DatabaseError) as exc:
        if STATE.verbose or os.environ.get("XRAY_VERBOSE"):
            logger.exception("failed")
        err_console.print(f"error: {exc}")
        sys.exit(2 if isinstance(exc, SettingsError) else 1)
    except psycopg.Error as exc:  # the server answered but refused: say what, and what to do
        if STATE.verbose or os.environ.get("XRAY_VERBOSE"):
            logger.exception("failed")
        err_console.print(f"error: {_refusal(exc)} (--verbose shows where)")
        sys.exit(1)
    except BrokenPipeError:
        # output piped into `head` and the like: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()
