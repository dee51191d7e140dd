"""Check a day of the archive: its manifest is there and of a known version, every file is
there with its SHA-256 and rows, and, while the day is still in PostgreSQL, every table's rows
equal the database's (the same count, and the same sum of row hashes: the same rows whatever
their order). The result is recorded in `archive_days`."""

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field

import polars as pl
import psycopg

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import SCHEMA_VERSION, TABLES
from xray_pipeline.core.archive.write import MANIFEST, day_bounds, day_folder
from xray_pipeline.core.db.frames import copy_batches

_MASK = (1 << 64) - 1


def content_sum(frame: pl.DataFrame) -> int:
    """An order-free checksum of a frame's rows: the sum of their hashes, modulo 2**64."""
    if frame.height == 0:
        return 0
    hashes = frame.hash_rows(seed=0x78726179).to_frame("h")
    low, high = hashes.select(
        (pl.col("h") % (1 << 32)).sum().alias("low"), (pl.col("h") // (1 << 32)).sum().alias("high")
    ).row(0)
    return (low + (high << 32)) & _MASK


@dataclass
class Verification:
    day: dt.date
    problems: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    database_rows: dict[str, int] | None = None  # None: the day is no longer in PostgreSQL

    @property
    def ok(self) -> bool:
        return not self.problems


def read_manifest(store: ArchiveStore, day: dt.date) -> dict | None:
    data = store.get(f"{day_folder(day)}/{MANIFEST}")
    return None if data is None else json.loads(data)


def day_is_hot(conn: psycopg.Connection, day: dt.date) -> bool:
    """Whether the day's partition of `logs` is still in PostgreSQL."""
    name = f"logs_{day:%Y_%m_%d}"
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def verify_day(
    conn: psycopg.Connection, store: ArchiveStore, day: dt.date, timezone: str
) -> Verification:
    """Check `day`'s archive (see the module) and record what was found."""
    result = Verification(day)
    manifest = None
    try:
        manifest = read_manifest(store, day)
    except (ValueError, UnicodeDecodeError) as exc:
        result.problems.append(f"{day_folder(day)}/{MANIFEST} is not a manifest: {exc}")
    if manifest is None:
        if not result.problems:
            result.problems.append(f"{day_folder(day)}/{MANIFEST} is missing")
    elif manifest.get("schema_version") != SCHEMA_VERSION:
        result.problems.append(
            f"schema version {manifest.get('schema_version')!r}, this version reads "
            f"{SCHEMA_VERSION}"
        )
    else:
        _check_files(conn, store, day, timezone, manifest, result)
    _record(conn, result)
    return result


def _check_files(
    conn: psycopg.Connection,
    store: ArchiveStore,
    day: dt.date,
    timezone: str,
    manifest: dict,
    result: Verification,
) -> None:
    sums: dict[str, int] = {}
    for table in TABLES:
        entry = manifest["tables"].get(table.name, {"rows": 0, "files": []})
        total = checksum = 0
        for f in entry["files"]:
            data = store.get(f["path"])
            if data is None:
                result.problems.append(f"{f['path']} is missing")
                continue
            if hashlib.sha256(data).hexdigest() != f["sha256"]:
                result.problems.append(f"{f['path']} changed: its SHA-256 is not the manifest's")
                continue
            frame = pl.read_parquet(io.BytesIO(data))
            if frame.height != f["rows"]:
                result.problems.append(f"{f['path']}: {frame.height} rows, manifest {f['rows']}")
            total += frame.height
            checksum = (checksum + content_sum(frame.select(list(table.schema)))) & _MASK
        result.rows[table.name] = total
        sums[table.name] = checksum
    if result.problems or not day_is_hot(conn, day):
        return
    lo, hi = day_bounds(conn, day, timezone)
    result.database_rows = {}
    for table in TABLES:
        rows = checksum = 0
        for frame in copy_batches(conn, table.query, {"lo": lo, "hi": hi}, table.schema):
            rows += frame.height
            checksum = (checksum + content_sum(frame)) & _MASK
        result.database_rows[table.name] = rows
        if rows != result.rows[table.name]:
            result.problems.append(
                f"{table.name}: {result.rows[table.name]} rows archived, {rows} in PostgreSQL"
            )
        elif checksum != sums[table.name]:
            result.problems.append(
                f"{table.name}: the archived rows differ from PostgreSQL's (same count)"
            )
    conn.commit()


def _record(conn: psycopg.Connection, result: Verification) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE archive_days SET verified_at = CASE WHEN %(ok)s THEN now() END, "
            "problem = %(problem)s WHERE day = %(day)s",
            {"ok": result.ok, "problem": "; ".join(result.problems) or None, "day": result.day},
        )
