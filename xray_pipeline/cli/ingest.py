"""`xray-pipeline ingest`, `replay` and `spool`: one-shot loads and the offline spool."""

from typing import Annotated

import typer
from rich.table import Table

from xray_pipeline.cli.console import (
    NO_LOGFILE,
    STATE,
    LogfileOption,
    console,
    err_console,
    progress_bar,
)
from xray_pipeline.settings import Settings

spool_app = typer.Typer(help="The offline spool.", rich_markup_mode=None)


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
    from xray_pipeline.core.db.connect import DatabaseUnavailable
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.ingest.files import expand_paths, unreadable_reason
    from xray_pipeline.core.ingest.ledger import LocalOffsets, remember_offsets
    from xray_pipeline.core.ingest.offline import SpoolFull, spooled_ranges
    from xray_pipeline.core.ingest.oneshot import ingest_files, spool_files
    from xray_pipeline.core.privacy.policy import policy_from_settings

    settings = STATE.settings(
        **{"parser.logfile": logfile, "parser.node": node, "parser.batch_size": batch_size}
    )
    if not settings.logfiles:
        err_console.print(NO_LOGFILE)
        raise typer.Exit(2)
    if hint := settings.timezone_hint():
        err_console.print(f"note: {hint}")
    paths = expand_paths(settings.logfiles)
    offsets = LocalOffsets(settings.home / "offsets.json")
    spooler = _spooler(settings)
    policy = policy_from_settings(settings)
    try:
        with session(settings) as conn, progress_bar("loading", in_bytes=True) as bar:
            _replay_waiting(conn, settings)
            stats = ingest_files(
                conn,
                paths,
                timezone=settings.timezone,
                batch_size=settings.batch_size,
                node=settings.node,
                from_start=from_start,
                on_total=bar.bytes_total,
                on_progress=bar.advance,
                spooler=spooler,
                policy=policy,
            )
            if stats.mode == "online":
                remember_offsets(conn, offsets)
                _judge(conn, settings, [stats])
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
    stats_error = export_run_stats(stats, settings)
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


def export_run_stats(stats, settings: Settings) -> str | None:
    """Append the run's statistics; what went wrong, naming the setting, or None."""
    from xray_pipeline.core.ingest.stats import export_stats

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
    from xray_pipeline.core.ingest.offline import write_segment

    limit = settings.parser.spool_max_mb * 1024 * 1024

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


def _judge(conn, settings: Settings, loaded: list) -> None:
    """Judge the loaded rows against [rules] (the pipeline's loads do the same), and say
    what that opened."""
    from xray_pipeline.core.rules.evaluate import RulesConfig, evaluate_loaded

    if not settings.rules.evaluate:
        return
    evaluation = evaluate_loaded(conn, loaded, RulesConfig.from_settings(settings))
    if evaluation is None:
        return
    opened = len(evaluation.recorded.opened)
    err_console.print(
        f"rules: {evaluation.judged:,} rows judged in {evaluation.seconds:.1f} s"
        + (
            f"; {opened} incident(s) opened: `xray-pipeline incidents list --open`"
            if opened
            else ""
        )
    )


def _replay_waiting(conn, settings: Settings) -> tuple[int, int]:
    """Replay the waiting segments; (segments, lines) loaded."""
    from xray_pipeline.core.ingest.offline import replay
    from xray_pipeline.core.privacy.policy import policy_from_settings

    done = lines = 0
    loaded: list = []
    policy = policy_from_settings(settings)
    for segment, results, damaged in replay(conn, settings.spool_dir, policy=policy):
        if damaged:
            err_console.print(
                f"warning: {segment.path.name} is damaged; kept aside in "
                f"{settings.spool_dir / 'corrupt'} (nothing of it was loaded)"
            )
            continue
        done += 1
        lines += sum(r.lines for r in results)
        loaded += results
    if done:
        err_console.print(f"replayed {done} spooled segment(s): {lines:,} lines loaded")
        _judge(conn, settings, loaded)
    return done, lines


def replay_cmd() -> None:
    """Load the segments spooled while PostgreSQL was down (exactly once; safe to repeat)."""
    from xray_pipeline.core.db.session import session

    settings = STATE.settings()
    with session(settings) as conn:
        done, _ = _replay_waiting(conn, settings)
    if not done:
        console.print(f"nothing waits in {settings.spool_dir}")


@spool_app.command("status")
def spool_status() -> None:
    """List the segments waiting in the offline spool."""
    from xray_pipeline.core.ingest.offline import describe, spool_size

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
