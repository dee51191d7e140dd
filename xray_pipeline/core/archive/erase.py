"""Erasure in the archive: rewrite every archived file that holds rows of a forgotten user (or
whose addresses a privacy policy now masks), each file replaced whole (the old or the new,
never neither), then its day's manifest and its rows of `archive_files`. A day no longer in
PostgreSQL counts its erased rows in the ledger (`erased`), as a deletion from `logs` does."""

import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import psycopg

from xray_pipeline.core.archive.read import scan
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import TABLES, ArchivedTable
from xray_pipeline.core.archive.verify import day_is_hot, read_manifest
from xray_pipeline.core.archive.write import MANIFEST, day_folder, parquet_bytes
from xray_pipeline.core.db.locks import lock_ledger

# a table's rows to keep, or None when the table is not touched
Keep = Callable[[ArchivedTable], pl.Expr | None]
# a table's rows rewritten (a masked address): their new values, or None
Rewrite = Callable[[ArchivedTable, pl.DataFrame], pl.DataFrame | None]

_COUNT_ERASED = """
WITH gone AS (SELECT * FROM unnest(%(sources)s::int[], %(offsets)s::int8[]) AS g (s, o)),
counted AS (
    SELECT l.id, count(*) AS n FROM gone g JOIN ingest_ledger l ON l.source_id = g.s
        AND int8range(l.start_offset, l.end_offset) @> g.o
    GROUP BY 1
)
UPDATE ingest_ledger l SET erased = l.erased + c.n FROM counted c WHERE l.id = c.id
"""


def archived_days(conn: psycopg.Connection) -> list[dt.date]:
    return [r[0] for r in conn.execute("SELECT day FROM archive_days ORDER BY day")]


@dataclass
class Erased:
    """What erase_rows removed: rows per table, and the days it rewrote."""

    rows: dict[str, int] = field(default_factory=lambda: {t.name: 0 for t in TABLES})
    days: list[dt.date] = field(default_factory=list)


def erase_rows(
    conn: psycopg.Connection, store: ArchiveStore, keep: Keep, days: list[dt.date] | None = None
) -> Erased:
    """Remove from the archived `days` (default: all) the rows that `keep` does not keep. A
    file is read whole only when a scan of it (pruned by its statistics) finds such a row."""
    erased = Erased()

    def change(table: ArchivedTable, frame: pl.DataFrame) -> pl.DataFrame | None:
        condition = keep(table)
        if condition is None:
            return None
        kept = frame.filter(condition)
        return None if kept.height == frame.height else kept

    def touched(table: ArchivedTable, path: str) -> bool:
        condition = keep(table)
        if condition is None:
            return False
        found = scan(store, [path], table).filter(~condition).select(pl.len()).collect()
        return found.item() > 0

    for day in days if days is not None else archived_days(conn):
        changed = _rewrite_day(conn, store, day, change, touched)
        for name, (before, after) in changed.items():
            erased.rows[name] += before - after
        if changed:
            erased.days.append(day)
    return erased


def rewrite_rows(
    conn: psycopg.Connection, store: ArchiveStore, rewrite: Rewrite, day: dt.date
) -> int:
    """Replace rows of the archived `day` by what `rewrite` makes of them; the rows of the
    tables it changed."""
    return sum(before for before, _ in _rewrite_day(conn, store, day, rewrite).values())


def _rewrite_day(
    conn: psycopg.Connection,
    store: ArchiveStore,
    day: dt.date,
    change: Rewrite,
    touched: Callable[[ArchivedTable, str], bool] | None = None,
) -> dict[str, tuple[int, int]]:
    """Apply `change` to each file of `day` (those that `touched` says it may change);
    {table: (rows before, rows after)} over the files replaced."""
    manifest = read_manifest(store, day)
    if manifest is None:
        return {}
    hot = day_is_hot(conn, day)
    done: dict[str, tuple[int, int]] = {}
    gone: list[pl.DataFrame] = []
    for table in TABLES:
        for entry in manifest["tables"].get(table.name, {}).get("files", []):
            if touched is not None and not touched(table, entry["path"]):
                continue
            data = store.get(entry["path"])
            if data is None:
                continue  # the check reports it
            frame = pl.read_parquet(io.BytesIO(data))
            new = change(table, frame)
            if new is None:
                continue
            replaced = parquet_bytes(new, table)
            store.put(entry["path"], replaced)
            before = done.get(table.name, (0, 0))
            done[table.name] = (before[0] + frame.height, before[1] + new.height)
            if not hot and new.height < frame.height:
                gone.append(frame.join(new, on=list(table.key), how="anti").select(table.key))
            entry.update(rows=new.height, bytes=len(replaced),
                         sha256=hashlib.sha256(replaced).hexdigest())  # fmt: skip
    if not done:
        return {}
    for table in manifest["tables"].values():
        table["rows"] = sum(f["rows"] for f in table["files"])
    store.put(f"{day_folder(day)}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    with conn.transaction():
        for table in manifest["tables"].values():
            for f in table["files"]:
                conn.execute(
                    "UPDATE archive_files SET rows = %s, bytes = %s, sha256 = %s WHERE path = %s",
                    (f["rows"], f["bytes"], f["sha256"], f["path"]),
                )
        conn.execute(
            "UPDATE archive_days SET rows = %s, verified_at = NULL WHERE day = %s",
            (sum(t["rows"] for t in manifest["tables"].values()), day),
        )
        if gone:  # the day is only here: the ledger counts its erased lines
            lock_ledger(conn)
            keys = pl.concat(gone)
            conn.execute(_COUNT_ERASED, {"sources": keys["source_id"].to_list(),
                                         "offsets": keys["byte_offset"].to_list()})  # fmt: skip
    return done
