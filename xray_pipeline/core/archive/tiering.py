"""Hot and cold: a day older than [retention] hot_days leaves PostgreSQL (its partition of
`logs`, its rows of `dns_queries` and `rejects`) once its archive is checked whole and equal to
it, right before; a day not archived, or whose archive differs, stays, and the report says why.
The rollups stay: stats, series and top lists do not change."""

import datetime as dt
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.verify import verify_day
from xray_pipeline.core.db.partitions import list_partitions, partition_name


@dataclass
class TierReport:
    dropped: list[dt.date] = field(default_factory=list)
    kept: dict[dt.date, str] = field(default_factory=dict)  # day: why it stays


def hot_partitions(conn: psycopg.Connection) -> list[dt.date]:
    days = []
    for name, _ in list_partitions(conn):
        try:
            day = dt.datetime.strptime(name, "logs_%Y_%m_%d").date()
        except ValueError:
            continue
        if name == partition_name(day):
            days.append(day)
    return sorted(days)


def leave_postgres(
    conn: psycopg.Connection,
    store: ArchiveStore,
    *,
    today: dt.date,
    hot_days: int,
    timezone: str,
) -> TierReport:
    """Drop from PostgreSQL the days before today - `hot_days` whose archive checks out."""
    report = TierReport()
    cutoff = today - dt.timedelta(days=hot_days)
    archived = {r[0] for r in conn.execute("SELECT day FROM archive_days")}
    conn.commit()
    for day in hot_partitions(conn):
        if day >= cutoff:
            break
        if day not in archived:
            report.kept[day] = "not archived yet: materialize logs_archive for it"
            continue
        check = verify_day(conn, store, day, timezone)
        if not check.ok:
            report.kept[day] = "; ".join(check.problems)
            continue
        _drop_day(conn, day, timezone)
        report.dropped.append(day)
    return report


def _drop_day(conn: psycopg.Connection, day: dt.date, timezone: str) -> None:
    """Detach the day's partition CONCURRENTLY (readers and writers of `logs` go on), drop it,
    and delete the day's DNS lines and rejects."""
    name = sql.Identifier(partition_name(day))
    conn.commit()
    previous = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(sql.SQL("ALTER TABLE logs DETACH PARTITION {} CONCURRENTLY").format(name))
        conn.execute(sql.SQL("DROP TABLE {}").format(name))
        for table in ("dns_queries", "rejects"):
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} t USING xray_day_bounds(%s, %s) b "
                    "WHERE t.ts >= b.lo AND t.ts < b.hi"
                ).format(sql.Identifier(table)),
                (day, timezone),
            )
    finally:
        conn.autocommit = previous


def archived_through(conn: psycopg.Connection, today: dt.date, timezone: str) -> dt.datetime:
    """The start of the oldest closed day of `logs` not archived yet (today's start when
    every closed day is): a line written before it is in the archive."""
    archived = {r[0] for r in conn.execute("SELECT day FROM archive_days")}
    waiting = [d for d in hot_partitions(conn) if d < today and d not in archived]
    first = min(waiting, default=today)
    lo = conn.execute("SELECT lo FROM xray_day_bounds(%s, %s)", (first, timezone)).fetchone()[0]
    conn.commit()
    return lo


def delete_archived_before(
    conn: psycopg.Connection, store: ArchiveStore, cutoff: dt.date
) -> list[dt.date]:
    """Delete the archived days before `cutoff` ([retention] raw_days: raw data kept that
    long in either tier): their files, manifests and rows of `archive_days`."""
    from xray_pipeline.core.archive.write import MANIFEST, day_folder

    days = [r[0] for r in conn.execute(
        "SELECT day FROM archive_days WHERE day < %s ORDER BY day", (cutoff,)
    )]  # fmt: skip
    for day in days:
        for name in store.listdir(day_folder(day)):
            if name != MANIFEST:
                store.delete(f"{day_folder(day)}/{name}")
        store.delete(f"{day_folder(day)}/{MANIFEST}")  # last: a day without it is gone
        with conn.transaction():
            conn.execute("DELETE FROM archive_files WHERE day = %s", (day,))
            conn.execute("DELETE FROM archive_days WHERE day = %s", (day,))
    conn.commit()
    return days
