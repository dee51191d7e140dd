"""Write a closed day of `logs`, `dns_queries` and `rejects` to the archive: per table, parts
of Parquet (zstd) of a bounded number of rows each, sorted by TABLES' order, in the day's
folder `day=YYYY-MM-DD/` (hive style), then the day's manifest.json (files, rows, SHA-256,
schema version) and its rows of `archive_files` and `archive_days`."""

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field

import polars as pl
import psycopg

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import SCHEMA_VERSION, TABLES, ArchivedTable
from xray_pipeline.core.db.frames import copy_batches

# rows of a row group: a user's page reads the groups whose user range holds the user
ROW_GROUP = 50_000
# a part holds the rows of about this much CSV from PostgreSQL (some 400,000 rows of logs):
# what is held at once, whatever the day's size
PART_BYTES = 48 * 1024 * 1024
MANIFEST = "manifest.json"


def day_folder(day: dt.date) -> str:
    return f"day={day.isoformat()}"


def part_name(table: str, part: int) -> str:
    return f"{table}-{part:03d}.parquet"


@dataclass
class ArchivedFile:
    table: str
    part: int
    path: str
    rows: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return {"path": self.path, "part": self.part, "rows": self.rows, "bytes": self.bytes,
                "sha256": self.sha256}  # fmt: skip


@dataclass
class DayArchive:
    """What an archive of a day wrote."""

    day: dt.date
    timezone: str
    files: list[ArchivedFile] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self, table: str | None = None) -> int:
        return sum(f.rows for f in self.files if table is None or f.table == table)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def manifest(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "day": self.day.isoformat(),
            "timezone": self.timezone,
            "written_at": dt.datetime.now(dt.UTC).isoformat(),
            "tables": {
                t.name: {
                    "rows": self.rows(t.name),
                    "columns": {c: str(d) for c, d in t.schema.items()},
                    "files": [f.as_dict() for f in self.files if f.table == t.name],
                }
                for t in TABLES
            },
        }


def parquet_bytes(frame: pl.DataFrame, table: ArchivedTable) -> bytes:
    """A frame of `table` as the archive's Parquet: sorted, zstd, with statistics."""
    buffer = io.BytesIO()
    (
        frame.sort(list(table.sort), nulls_last=True).write_parquet(
            buffer,
            compression="zstd",
            compression_level=3,
            statistics=True,
            row_group_size=ROW_GROUP,
        )
    )
    return buffer.getvalue()


def put_part(
    store: ArchiveStore, day: dt.date, table: ArchivedTable, part: int, frame: pl.DataFrame
) -> ArchivedFile:
    data = parquet_bytes(frame, table)
    path = f"{day_folder(day)}/{part_name(table.name, part)}"
    store.put(path, data)
    return ArchivedFile(table.name, part, path, frame.height, len(data),
                        hashlib.sha256(data).hexdigest())  # fmt: skip


def day_bounds(conn: psycopg.Connection, day: dt.date, timezone: str) -> tuple:
    return conn.execute("SELECT lo, hi FROM xray_day_bounds(%s, %s)", (day, timezone)).fetchone()


def archive_day(
    conn: psycopg.Connection,
    store: ArchiveStore,
    day: dt.date,
    timezone: str,
    part_bytes: int = PART_BYTES,
) -> DayArchive:
    """Write `day` (local, zone `timezone`) to the archive, replacing an archive of it made
    before (its extra parts are removed once the new manifest is written)."""
    clock = dt.datetime.now()
    lo, hi = day_bounds(conn, day, timezone)
    conn.commit()
    result = DayArchive(day, timezone)
    # one snapshot for the three tables: the files agree with each other
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in TABLES:
            batches = copy_batches(conn, table.query, {"lo": lo, "hi": hi}, table.schema,
                                   batch_bytes=part_bytes)  # fmt: skip
            for part, frame in enumerate(batches):
                result.files.append(put_part(store, day, table, part, frame))
    written = {f.path for f in result.files}
    store.put(f"{day_folder(day)}/{MANIFEST}", json.dumps(result.manifest(), indent=1).encode())
    for name in store.listdir(day_folder(day)):
        path = f"{day_folder(day)}/{name}"
        if name.endswith(".parquet") and path not in written:
            store.delete(path)
    record_day(conn, result)
    result.seconds = (dt.datetime.now() - clock).total_seconds()
    return result


def record_day(conn: psycopg.Connection, result: DayArchive) -> None:
    """The day's files in `archive_files` and `archive_days` (not verified yet)."""
    with conn.transaction():
        conn.execute("DELETE FROM archive_files WHERE day = %s", (result.day,))
        with conn.cursor().copy(
            "COPY archive_files (day, table_name, part, path, rows, bytes, sha256) FROM STDIN"
        ) as copy:
            for f in result.files:
                copy.write_row((result.day, f.table, f.part, f.path, f.rows, f.bytes, f.sha256))
        conn.execute(
            """
            INSERT INTO archive_days (day, schema_version, rows) VALUES (%s, %s, %s)
            ON CONFLICT (day) DO UPDATE SET schema_version = excluded.schema_version,
                rows = excluded.rows, written_at = now(), verified_at = NULL, problem = NULL
            """,
            (result.day, SCHEMA_VERSION, result.rows()),
        )
