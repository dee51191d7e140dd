"""`xray-pipeline archive`: the Parquet archive of closed days: what it holds, a check, writing
days without Dagster, and the rows of an archived day (as `parse` prints them)."""

import datetime as dt
import json
import sys
from typing import Annotated

import typer

from xray_pipeline.cli.console import STATE, console, err_console
from xray_pipeline.cli.parse import OutputFormat

archive_app = typer.Typer(
    help="The Parquet archive of closed days ([archive]): list, check, write, show.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _store():
    from xray_pipeline.core.archive.store import configured_store

    store = configured_store(STATE.settings())
    if store is None:
        err_console.print("error: the archive is off ([archive] enabled = false)")
        raise typer.Exit(2)
    return store


def _day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        err_console.print(f"error: {option} {value!r}: expected a date like 2025-11-17")
        raise typer.Exit(2) from None


@archive_app.command("list")
def archive_list() -> None:
    """The archived days: rows, size, where their rows are (PostgreSQL and the archive, or the
    archive only) and the last check."""
    from rich.table import Table

    from xray_pipeline.core.db.session import session

    store = _store()
    with session(STATE.settings()) as conn:
        days = conn.execute(
            "SELECT d.day, d.rows, sum(f.bytes)::bigint, d.verified_at, d.problem, "
            "to_regclass('logs_' || to_char(d.day, 'YYYY_MM_DD')) IS NOT NULL "
            "FROM archive_days d LEFT JOIN archive_files f USING (day) "
            "GROUP BY 1, 2, 4, 5 ORDER BY 1"
        ).fetchall()
    if not days:
        console.print(f"no day archived yet in {store.root}")
        return
    table = Table(title=f"archive: {store.root}")
    for column in ("day", "rows", "MB", "B/row", "in", "checked"):
        table.add_column(column)
    for day, rows, size, verified, problem, hot in days:
        size = size or 0
        checked = problem or (verified.isoformat(timespec="seconds") if verified else "not yet")
        table.add_row(day.isoformat(), f"{rows:,}", f"{size / 1e6:.1f}",
                      f"{size / rows:.1f}" if rows else "", "both" if hot else "archive",
                      checked)  # fmt: skip
    console.print(table)


@archive_app.command("verify")
def archive_verify(
    day: Annotated[str | None, typer.Argument(help="the day (default: every archived day)")] = None,
) -> None:
    """Check archived days: every file there with its SHA-256 and rows, and, while the day is
    still in PostgreSQL, the same rows as there. Exits 1 when a day fails."""
    from xray_pipeline.core.archive.verify import verify_day
    from xray_pipeline.core.db.session import session

    store = _store()
    settings = STATE.settings()
    failed = 0
    with session(settings) as conn:
        days = [_day(day, "DAY")] if day else [
            r[0] for r in conn.execute("SELECT day FROM archive_days ORDER BY day")
        ]  # fmt: skip
        for each in days:
            check = verify_day(conn, store, each, settings.timezone)
            rows = sum(check.rows.values())
            if check.ok:
                where = "and PostgreSQL agree" if check.database_rows else "(archive only)"
                console.print(f"{each}: ok, {rows:,} rows {where}")
            else:
                failed += 1
                console.print(f"{each}: FAILED: {'; '.join(check.problems)}")
    if failed:
        err_console.print(f"{failed} of {len(days)} day(s) failed")
        raise typer.Exit(1)


@archive_app.command("write")
def archive_write(
    first: Annotated[str, typer.Argument(help="the first day to archive (YYYY-MM-DD)")],
    last: Annotated[str | None, typer.Argument(help="the last day (default: the first)")] = None,
) -> None:
    """Archive closed days now, as the logs_archive asset does (for a setup without Dagster:
    `ingest` from cron), each checked against PostgreSQL after it is written."""
    import zoneinfo

    from xray_pipeline.cli.console import progress_bar
    from xray_pipeline.core.archive.verify import day_is_hot, verify_day
    from xray_pipeline.core.archive.write import archive_day
    from xray_pipeline.core.db.session import session

    store = _store()
    settings = STATE.settings()
    start, end = _day(first, "FIRST"), _day(last or first, "LAST")
    today = dt.datetime.now(zoneinfo.ZoneInfo(settings.timezone)).date()
    if end >= today:
        err_console.print(f"error: {end} is not over yet: a day is archived once it has ended")
        raise typer.Exit(2)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    failed = 0
    with session(settings) as conn, progress_bar("archiving days", in_bytes=False) as bar:
        bar.total(len(days))
        for day in days:
            if not day_is_hot(conn, day):
                console.print(f"{day}: not in PostgreSQL; nothing to write")
                bar.advance(1)
                continue
            written = archive_day(conn, store, day, settings.timezone)
            check = verify_day(conn, store, day, settings.timezone)
            failed += not check.ok
            console.print(
                f"{day}: {written.rows():,} rows, {written.bytes / 1e6:.1f} MB, "
                f"{written.seconds:.1f} s, " + ("checked" if check.ok else
                                                 "FAILED: " + "; ".join(check.problems))
            )  # fmt: skip
            bar.advance(1)
    if failed:
        raise typer.Exit(1)


@archive_app.command("show")
def archive_show(
    day: Annotated[str, typer.Argument(help="the archived day (YYYY-MM-DD)")],
    table: Annotated[str, typer.Option(help="logs, dns_queries or rejects")] = "logs",
    user: Annotated[str | None, typer.Option(help="this user's rows only (logs)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many rows, in time order", min=1)] = 100,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="jsonl, csv or table")
    ] = OutputFormat.jsonl,
) -> None:
    """The rows of an archived day, in time order, read from its files (as `parse` prints what
    it would store)."""
    import csv

    import polars as pl

    from xray_pipeline.core.archive.read import day_files, scan, table_named
    from xray_pipeline.core.db.session import session

    store = _store()
    try:
        archived = table_named(table)
    except StopIteration:
        err_console.print(f"error: --table {table!r}: use logs, dns_queries or rejects")
        raise typer.Exit(2) from None
    wanted = _day(day, "DAY")
    with session(STATE.settings()) as conn:
        paths = day_files(conn, archived, [wanted])
    if not paths:
        err_console.print(f"error: {wanted} is not archived (see `xray-pipeline archive list`)")
        raise typer.Exit(1)
    rows = scan(store, paths, archived)
    if user is not None:
        rows = rows.filter(pl.col("user") == user) if archived.name == "logs" else rows.head(0)
    frame = rows.sort("ts", "source_id", "byte_offset").head(limit).collect()
    if output_format is OutputFormat.table:
        with pl.Config(tbl_rows=limit, tbl_cols=-1, fmt_str_lengths=60):
            console.print(str(frame))
        return
    records = frame.with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%z")).to_dicts()
    if output_format is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=frame.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return
    for record in records:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
