"""The ingest ledger: which byte ranges of each source are loaded, and what lies between them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the shipper plans with the ranges here and never loads the driver
    import psycopg

# [start, end) of a source's bytes
Range = tuple[int, int]


def missing_ranges(
    loaded: Iterable[Range], start: int, end: int | None
) -> list[tuple[int, int | None]]:
    """The parts of [start, end) that no range of `loaded` covers, in order (`end` None: open
    to the end of the file). The one computation of gaps in byte ranges: the planner's new
    bytes and holes, the spool's unloaded parts of a segment."""
    parts: list[tuple[int, int | None]] = []
    cursor = start
    for lo, hi in sorted(loaded):
        if end is not None and lo >= end:
            break
        if lo > cursor:
            parts.append((cursor, lo))
        cursor = max(cursor, hi)
    if end is None or cursor < end:
        parts.append((cursor, end))
    return parts


def last_end(loaded: Iterable[Range]) -> int:
    """The offset just past the last loaded byte (0 when nothing is loaded)."""
    return max((end for _, end in loaded), default=0)


def holes(loaded: list[Range]) -> list[Range]:
    """The byte ranges before the last loaded byte that no loaded range covers: what a run
    that failed (the database went away, the process was killed) left behind while later
    ranges loaded."""
    return [(lo, hi) for lo, hi in missing_ranges(loaded, 0, last_end(loaded)) if hi is not None]


def committed_ranges(conn: psycopg.Connection, identities: list[str]) -> dict[str, list[Range]]:
    """The loaded byte ranges per source identity, in order, adjacent ones merged (a file
    tailed for a week has hundreds of thousands of ledger rows and a few ranges): of these
    identities, and of any source with the same fingerprint (a copy of a known file has
    another device and inode)."""
    if not identities:
        return {}
    fingerprints = [i.rsplit(":", 1)[-1] for i in identities]
    rows = conn.execute(
        """
        WITH ranges AS (
            SELECT s.identity, l.start_offset, l.end_offset,
                max(l.end_offset) OVER (
                    PARTITION BY s.identity ORDER BY l.start_offset
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                ) AS reached
            FROM sources s JOIN ingest_ledger l ON l.source_id = s.id
            WHERE s.identity = ANY(%s) OR split_part(s.identity, ':', 3) = ANY(%s)
        ), islands AS (
            SELECT identity, start_offset, end_offset,
                count(*) FILTER (WHERE reached IS NULL OR start_offset > reached)
                    OVER (PARTITION BY identity ORDER BY start_offset) AS island
            FROM ranges
        )
        SELECT identity, min(start_offset), max(end_offset)
        FROM islands GROUP BY identity, island ORDER BY identity, 2
        """,
        (identities, fingerprints),
    ).fetchall()
    ranges: dict[str, list[Range]] = {}
    for identity, start, end in rows:
        ranges.setdefault(identity, []).append((start, end))
    return ranges


def last_ranges(conn: psycopg.Connection, identities: list[str]) -> dict[str, list[Range]]:
    """The last loaded range per source identity (as committed_ranges, fingerprint copies
    included): all that a tail, which loads what follows, needs, at the cost of one index
    probe per source however long the ledger has grown."""
    if not identities:
        return {}
    fingerprints = [i.rsplit(":", 1)[-1] for i in identities]
    rows = conn.execute(
        """
        SELECT s.identity, last.start_offset, last.end_offset
        FROM sources s
        CROSS JOIN LATERAL (
            SELECT l.start_offset, l.end_offset FROM ingest_ledger l
            WHERE l.source_id = s.id ORDER BY l.start_offset DESC LIMIT 1
        ) last
        WHERE s.identity = ANY(%s) OR split_part(s.identity, ':', 3) = ANY(%s)
        """,
        (identities, fingerprints),
    ).fetchall()
    return {identity: [(start, end)] for identity, start, end in rows}


def source_ranges(conn: psycopg.Connection, source_id: int, start: int, end: int) -> list[Range]:
    """The loaded ranges of one source that overlap [start, end)."""
    rows = conn.execute(
        "SELECT start_offset, end_offset FROM ingest_ledger WHERE source_id = %s "
        "AND end_offset > %s AND start_offset < %s ORDER BY start_offset",
        (source_id, start, end),
    ).fetchall()
    return [(lo, hi) for lo, hi in rows]


def last_loaded_offsets(conn: psycopg.Connection) -> dict[str, int]:
    """The offset past the last loaded byte of every source, by identity."""
    rows = conn.execute(
        "SELECT s.identity, max(l.end_offset) FROM sources s "
        "JOIN ingest_ledger l ON l.source_id = s.id GROUP BY s.identity"
    ).fetchall()
    return dict(rows)


def discontinuities(conn: psycopg.Connection) -> list[tuple[str, int, int]]:
    """(source path, from, to) for every break between two consecutive loaded ranges, found
    by PostgreSQL over the whole ledger (the freshness and ledger checks)."""
    rows = conn.execute(
        """
        SELECT s.path, prev_end, start_offset FROM (
            SELECT source_id, start_offset,
                   coalesce(lag(end_offset) OVER (PARTITION BY source_id ORDER BY start_offset), 0)
                       AS prev_end
            FROM ingest_ledger
        ) x JOIN sources s ON s.id = x.source_id
        WHERE start_offset <> prev_end
        ORDER BY 1, 2
        """
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


class LocalOffsets:
    """The loaded ranges last seen per source, kept in a small JSON file, so that an ingest
    can plan (and spool) while PostgreSQL is unreachable."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, list[Range]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {k: [(int(lo), int(hi)) for lo, hi in v] for k, v in data.items()}

    def write(self, ends: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({key: [(0, end)] for key, end in ends.items()}))
        tmp.replace(self.path)


def remember_offsets(conn: psycopg.Connection, offsets: LocalOffsets) -> None:
    """Refresh the local record from the ledger (the last loaded byte of every source)."""
    ends = last_loaded_offsets(conn)
    conn.commit()
    offsets.write(ends)


def loaded_bytes_by_path(conn: psycopg.Connection, node: str | None = None) -> dict[str, int]:
    """The bytes loaded from each file (of the fleet's nodes, or of one node), by path."""
    rows = conn.execute(
        "SELECT s.path, sum(l.end_offset - l.start_offset)::bigint FROM ingest_ledger l "
        "JOIN sources s ON s.id = l.source_id "
        "WHERE s.node IS NOT NULL AND (%(node)s::text IS NULL OR s.node = %(node)s) "
        "GROUP BY s.path",
        {"node": node},
    ).fetchall()
    return dict(rows)
