"""Erasure of one user: `forget` removes what the pipeline keeps of them (log rows, rejects,
rollups, the archive's rows, landed lines, the user itself, addresses and destinations no one
else has). A forgotten email's SHA-256 stays in
`forgotten_users`, so that a later load of the same bytes drops its lines again."""

import datetime as dt
import hashlib
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from xray_pipeline.core.archive.erase import erase_rows
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import ArchivedTable
from xray_pipeline.core.db.locks import lock_ledger
from xray_pipeline.core.parse.patterns import REJECTED_EMAIL

# the rollups with a user dimension (the others are totals without a person in them)
USER_ROLLUPS = (
    "daily_traffic",
    "daily_user_ips",
    "daily_user_destinations",
    "daily_user_activity",
    "daily_node_users",
)
USERLESS_ROLLUPS = ("hourly_traffic", "daily_totals", "daily_places")
# an erased landed line: its bytes overwritten with spaces (its offsets, and every other
# line's, stay); a later read counts such a line as erased, not as a blank-line reject
ERASED_MIN = 8


def email_key(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def forgotten_keys(conn: psycopg.Connection) -> set[str]:
    """The SHA-256 of every forgotten email."""
    return {r[0] for r in conn.execute("SELECT email_sha256 FROM forgotten_users")}


def drop_forgotten_frames(
    access: pl.DataFrame, rejects: pl.DataFrame, forgotten: set[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The access and reject rows that are neither a forgotten user's (by email, or named in
    a malformed line) nor an erased landed line."""
    if forgotten:
        emails = access["email"].drop_nulls().unique().to_list()
        gone = [e for e in emails if email_key(e) in forgotten]
        if gone:
            access = access.filter(~pl.col("email").is_in(gone) | pl.col("email").is_null())
        # a malformed line that names a forgotten user (an error-log line, say)
        named = pl.col("raw").str.extract(REJECTED_EMAIL, 1)
        names = rejects.select(named.unique().drop_nulls()).to_series().to_list()
        gone = [e for e in names if email_key(e) in forgotten]
        if gone:
            rejects = rejects.filter(~named.is_in(gone) | named.is_null())
    erased_lines = (pl.col("reason") == "empty") & (
        pl.col("raw").str.len_bytes() >= ERASED_MIN
    ) & (pl.col("raw").str.strip_chars(" ") == "")  # fmt: skip
    return access, rejects.filter(~erased_lines)


@dataclass
class ForgetReport:
    """What `forget_user` erased, table by table."""

    email: str
    found: bool = False
    erased: dict[str, int] = field(default_factory=dict)
    landed_lines: int = 0
    landed_files: int = 0
    days: list[dt.date] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "email": self.email,
            "found": self.found,
            "erased": self.erased,
            "landed_lines": self.landed_lines,
            "landed_files": self.landed_files,
            "days": [d.isoformat() for d in self.days],
        }


def email_pattern(email: str) -> str:
    """A POSIX regex matching `email: EMAIL` in a raw line: the email runs to the end of the
    line (trailing whitespace aside) or to a glued record, as the parser reads it, so that
    `Carol` never matches `Carol Smith`'s lines."""
    glued = r"[[:space:]]+[0-9]{4}/[0-9]{2}/[0-9]{2} "
    return r"email: ?" + re.escape(email) + rf"[[:space:]]*($|{glued})"


_ERASE_ROWS = """
WITH gone AS (DELETE FROM {table} WHERE {cond} RETURNING source_id, byte_offset),
counted AS (
    SELECT l.id, count(*) AS n FROM gone g JOIN ingest_ledger l ON l.source_id = g.source_id
        AND int8range(l.start_offset, l.end_offset) @> g.byte_offset
    GROUP BY 1
),
ledger AS (UPDATE ingest_ledger l SET erased = l.erased + c.n FROM counted c WHERE l.id = c.id)
SELECT count(*) FROM gone
"""


def _erase_rows(conn: psycopg.Connection, table: str, condition: str, value: object) -> int:
    """Delete the rows of `table` matching `condition`, add them to the `erased` of the
    ledger ranges that hold them, and return how many; in one transaction that no compaction
    of the ledger runs beside."""
    with conn.transaction():
        lock_ledger(conn)
        statement = sql.SQL(_ERASE_ROWS).format(
            table=sql.Identifier(table), cond=sql.SQL(condition)
        )
        return conn.execute(statement, (value,)).fetchone()[0]


def forget_user(
    conn: psycopg.Connection,
    email: str,
    *,
    timezone: str,
    landing_dir: Path | None = None,
    archive: ArchiveStore | None = None,
) -> ForgetReport:
    """Erase `email` everywhere the pipeline keeps it, one transaction per table, and record
    it as forgotten (first, so that a load running meanwhile drops its lines too); the
    archived days that hold it are rewritten without it."""
    from xray_pipeline.core.db.rollups import rebuild_rollup

    report = ForgetReport(email)
    conn.execute(
        "INSERT INTO forgotten_users (email_sha256) VALUES (%s) ON CONFLICT DO NOTHING",
        (email_key(email),),
    )
    conn.commit()
    row = conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()
    uid = row[0] if row else None
    report.found = uid is not None
    sources: list[str] = []
    endpoints: list[int] = []
    if uid is not None:
        report.days = sorted(
            {
                r[0]
                for r in conn.execute("SELECT day FROM daily_user_ips WHERE user_id = %s", (uid,))
            }
            | {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT (ts AT TIME ZONE %s)::date FROM logs WHERE user_id = %s",
                    (timezone, uid),
                )
            }
        )
        sources = [
            r[0]
            for r in conn.execute(
                "SELECT source FROM daily_user_ips WHERE user_id = %(u)s UNION "
                "SELECT DISTINCT coalesce(host(src_ip), src_host) FROM logs WHERE user_id = %(u)s",
                {"u": uid},
            )
            if r[0]
        ]
        endpoints = [
            r[0]
            for r in conn.execute(
                "SELECT endpoint_id FROM daily_user_destinations WHERE user_id = %(u)s UNION "
                "SELECT DISTINCT endpoint_id FROM logs WHERE user_id = %(u)s",
                {"u": uid},
            )
            if r[0] is not None
        ]
        conn.commit()
        report.erased["logs"] = _erase_rows(conn, "logs", "user_id = %s", uid)
    report.erased["rejects"] = _erase_rows(conn, "rejects", "raw ~ %s", email_pattern(email))
    if uid is not None:
        for table in USER_ROLLUPS:
            with conn.transaction():
                report.erased[table] = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE user_id = %s").format(sql.Identifier(table)),
                    (uid,),
                ).rowcount
        # the totals without a person are recounted for the days whose rows are still kept
        kept = {
            r[0]
            for r in conn.execute(
                "SELECT day FROM unnest(%s::date[]) AS day, xray_day_bounds(day, %s) b "
                "WHERE EXISTS (SELECT 1 FROM logs WHERE ts >= b.lo AND ts < b.hi)",
                (report.days, timezone),
            )
        }
        for day in sorted(kept):
            for table in USERLESS_ROLLUPS:
                rebuild_rollup(conn, table, day, timezone)
        with conn.transaction():  # their incidents hold the email and their addresses
            report.erased["incidents"] = conn.execute(
                "DELETE FROM incidents WHERE subject = %s", (email,)
            ).rowcount
        with conn.transaction():
            report.erased["users"] = conn.execute(
                "DELETE FROM users WHERE id = %s", (uid,)
            ).rowcount
        report.erased["ip_places"] = _erase_unshared_places(conn, sources, report.days, timezone)
        report.erased["endpoints"] = _erase_unshared_endpoints(conn, endpoints)
    conn.commit()
    if archive is not None:
        erased = erase_rows(conn, archive, _forgotten_rows(email))
        report.erased["archive.logs"] = erased.rows["logs"]
        report.erased["archive.rejects"] = erased.rows["rejects"]
        report.days = sorted(set(report.days) | set(erased.days))
        conn.commit()
    if landing_dir is not None and landing_dir.is_dir():
        report.landed_files, report.landed_lines = erase_landed_lines(landing_dir, email)
    return report


def _forgotten_rows(email: str):
    """The archived rows to keep when `email` is forgotten: not theirs, not naming them."""

    def keep(table: ArchivedTable) -> pl.Expr | None:
        if table.name == "logs":
            return (pl.col("user") != email) | pl.col("user").is_null()
        if table.name == "rejects":
            return ~pl.col("raw").str.contains(email_pattern(email))
        return None

    return keep


def _erase_unshared_places(
    conn: psycopg.Connection, sources: list[str], days: list[dt.date], timezone: str
) -> int:
    """The places of the user's sources that no other row uses any more (the rollups of every
    day, the rows of the user's days)."""
    if not sources:
        return 0
    with conn.transaction():
        return conn.execute(
            """
            DELETE FROM ip_places p WHERE p.address = ANY(%(s)s)
            AND NOT EXISTS (SELECT 1 FROM daily_user_ips d WHERE d.source = p.address)
            AND NOT EXISTS (
                SELECT 1 FROM logs l, unnest(%(days)s::date[]) AS day,
                    xray_day_bounds(day, %(tz)s) b
                WHERE l.ts >= b.lo AND l.ts < b.hi
                  AND coalesce(host(l.src_ip), l.src_host) = p.address)
            """,
            {"s": sources, "days": days, "tz": timezone},
        ).rowcount


def _erase_unshared_endpoints(conn: psycopg.Connection, endpoints: list[int]) -> int:
    """The user's destinations that no other row or rollup uses any more."""
    if not endpoints:
        return 0
    with conn.transaction():
        return conn.execute(
            """
            DELETE FROM endpoints e WHERE e.id = ANY(%s)
            AND NOT EXISTS (SELECT 1 FROM logs l WHERE l.endpoint_id = e.id)
            AND NOT EXISTS (SELECT 1 FROM daily_user_destinations d WHERE d.endpoint_id = e.id)
            """,
            (endpoints,),
        ).rowcount


def erase_landed_lines(landing_dir: Path, email: str) -> tuple[int, int]:
    """Overwrite with spaces, in place, every landed line of `email` (its offsets and every
    other line's stay, so the ledger stays true); (files changed, lines erased)."""
    needle = f"email: {email}\n".encode()
    files = lines = 0
    for path in sorted(landing_dir.glob("*/*.log")):
        if path.stat().st_size == 0:
            continue
        changed = 0
        with path.open("r+b") as fh, mmap.mmap(fh.fileno(), 0) as data:
            at = data.find(needle)
            while at != -1:
                end = at + len(needle) - 1  # the newline stays
                start = data.rfind(b"\n", 0, at) + 1
                data[start:end] = b" " * (end - start)
                changed += 1
                at = data.find(needle, end)
            if changed:
                data.flush()
        if changed:
            files += 1
            lines += changed
    return files, lines
