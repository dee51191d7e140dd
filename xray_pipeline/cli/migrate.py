"""`xray-pipeline migrate`: move the original tool's `logs` table to this schema."""

from typing import Annotated

import typer
from rich.table import Table

from xray_pipeline.cli.console import STATE, console, err_console, progress_bar

LAYOUTS = {
    "ours": "the database already has the partitioned schema: nothing to migrate",
    "empty": "no logs table: the schema is created, nothing to migrate",
    "legacy": "found the original tool's unpartitioned logs table",
    "legacy_partitioned": "found the original tool's partitioned logs table",
    "in_progress": "resuming a migration (legacy tables renamed aside as legacy_*)",
}


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
    from xray_pipeline.core.db.session import session
    from xray_pipeline.core.ingest.legacy import MigrationError, migrate, plan

    settings = STATE.settings(**{"migration.drop_old": drop_old})
    with session(settings, upgrade=False) as conn:
        if dry_run:
            report = plan(conn, settings.timezone)
            console.print(LAYOUTS[report.layout])
            if report.days_total:
                console.print(
                    f"dry run: would move {report.rows_total:,} rows over "
                    f"{report.days_total} days; nothing was changed"
                )
            return
        with progress_bar("migrating days", in_bytes=False) as bar:

            def on_day(result, done: int, total: int) -> None:
                bar.total(total)
                bar.advance(1)

            try:
                report = migrate(
                    conn,
                    timezone=settings.timezone,
                    batch_days=batch_days,
                    drop_old=settings.migration.drop_old,
                    on_day=on_day,
                )
            except MigrationError as exc:
                err_console.print(f"error: {exc}")
                raise typer.Exit(1) from exc
    console.print(LAYOUTS[report.layout])
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
