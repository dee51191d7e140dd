"""Read the archive: which days are only there (their partitions of `logs` dropped), and their
rows as Polars lazy frames over the days' files (a Parquet scan prunes row groups by the
statistics of the filtered columns: a user's rows, a time range)."""

import datetime as dt

import polars as pl
import psycopg

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import TABLES, ArchivedTable

_COLD_DAYS = """
SELECT day FROM archive_days
WHERE to_regclass('logs_' || to_char(day, 'YYYY_MM_DD')) IS NULL
  AND (%(lo)s::date IS NULL OR day >= %(lo)s) AND (%(hi)s::date IS NULL OR day <= %(hi)s)
ORDER BY day
"""


def cold_days(
    conn: psycopg.Connection, lo: dt.date | None = None, hi: dt.date | None = None
) -> list[dt.date]:
    """The archived days from `lo` to `hi` (inclusive) whose rows are no longer in PostgreSQL."""
    return [r[0] for r in conn.execute(_COLD_DAYS, {"lo": lo, "hi": hi})]


def day_files(conn: psycopg.Connection, table: ArchivedTable, days: list[dt.date]) -> list[str]:
    """The archive's paths of `table`'s files of `days` (relative to its root), newest first."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT path FROM archive_files WHERE table_name = %s AND day = ANY(%s) "
            "ORDER BY day DESC, part",
            (table.name, days),
        )
    ]


def scan(store: ArchiveStore, paths: list[str], table: ArchivedTable) -> pl.LazyFrame:
    """The rows of the files `paths` of `table` (an empty frame of its schema for none)."""
    if not paths:
        return pl.LazyFrame(schema=table.schema)
    return pl.scan_parquet(
        [store.uri(p) for p in paths],
        schema=table.schema,
        storage_options=store.storage_options or None,
        hive_partitioning=False,
    )


def table_named(name: str) -> ArchivedTable:
    return next(t for t in TABLES if t.name == name)
