"""Ledger compaction: adjacent ranges of a source whose lines are of the same local day,
loaded on the same local day with the same status, merged into one row once they are ten
minutes old. A source tailed every second adds 86,400 ledger rows a day; compacted, its
ledger keeps a row per day, one for the range that holds midnight (its lines are of two days,
and a day's reconciliation counts the ranges that touch it, so it merges with neither), one
per hole, and the last minutes' loads. Ranges of lines without a time merge with each other.
Every reader of the ledger keeps its answer: a row is found in the range of its source that
holds its byte offset, and the merged row sums the counts."""

import datetime as dt
from dataclasses import dataclass

import psycopg

from xray_pipeline.core.db.locks import lock_ledger

# ranges loaded more recently than this are left alone (the last loads stay as they were, for
# whoever looks at what a run just did); older ones cost every reader that scans the ledger
COMPACT_AFTER = dt.timedelta(minutes=10)

_GROUPS = """
WITH old AS (
    SELECT id, source_id, start_offset, end_offset, status,
           (loaded_at AT TIME ZONE %(tz)s)::date AS loaded_on,
           CASE WHEN first_ts IS NULL THEN 'no time'
                WHEN (first_ts AT TIME ZONE %(tz)s)::date = (last_ts AT TIME ZONE %(tz)s)::date
                THEN ((first_ts AT TIME ZONE %(tz)s)::date)::text
           END AS lines_of  -- NULL: lines of two days, merged with none
    FROM ingest_ledger
    WHERE source_id = ANY(%(sources)s) AND loaded_at < now() - %(after)s::interval
), linked AS (
    SELECT *, CASE WHEN lag(end_offset) OVER w = start_offset AND lag(status) OVER w = status
                    AND lag(loaded_on) OVER w = loaded_on AND lag(lines_of) OVER w = lines_of
                    THEN 0 ELSE 1 END AS starts_group
    FROM old WINDOW w AS (PARTITION BY source_id ORDER BY start_offset)
), numbered AS (
    SELECT id, source_id, start_offset,
           sum(starts_group) OVER (PARTITION BY source_id ORDER BY start_offset) AS grp
    FROM linked
)
SELECT array_agg(id ORDER BY start_offset) FROM numbered
GROUP BY source_id, grp HAVING count(*) > 1
"""

_MERGE = """
WITH members AS (
    SELECT m[1] AS keeper, unnest(m[2:]) AS id
    FROM unnest(%(groups)s::text[]) AS g (ids),
         LATERAL (SELECT string_to_array(g.ids, ',')::bigint[]) AS a (m)
), gone AS (
    DELETE FROM ingest_ledger l USING members m WHERE l.id = m.id
    RETURNING m.keeper, l.*
)
SELECT keeper, max(end_offset), sum(lines), sum(access_rows), sum(dns_rows), sum(reject_rows),
       sum(erased), sum(seconds), min(first_ts), max(last_ts), max(loaded_at),
       string_agg(run_id, ' ')
FROM gone GROUP BY keeper
"""

_EXTEND = """
UPDATE ingest_ledger k SET end_offset = s.past, lines = k.lines + s.lines,
    access_rows = k.access_rows + s.access_rows, dns_rows = k.dns_rows + s.dns_rows,
    reject_rows = k.reject_rows + s.reject_rows, erased = k.erased + s.erased,
    seconds = k.seconds + s.seconds,
    first_ts = LEAST(k.first_ts, s.first_ts), last_ts = GREATEST(k.last_ts, s.last_ts),
    loaded_at = GREATEST(k.loaded_at, s.loaded_at),
    run_id = (SELECT string_agg(DISTINCT r, ' ') FROM unnest(string_to_array(
        concat_ws(' ', k.run_id, s.runs), ' ')) AS r)
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
            %s::bigint[], %s::bigint[], %s::float8[], %s::timestamptz[], %s::timestamptz[],
            %s::timestamptz[], %s::text[])
    AS s (keeper, past, lines, access_rows, dns_rows, reject_rows, erased, seconds,
          first_ts, last_ts, loaded_at, runs)
WHERE k.id = s.keeper
"""


# sources merged per transaction: bounds the memory and the lock time of a first compaction
SOURCES_AT_ONCE = 20


@dataclass
class Compaction:
    """What one compaction did: the groups of ranges merged, the ledger rows removed."""

    groups: int = 0
    removed: int = 0


def compact_ledger(
    conn: psycopg.Connection, *, timezone: str, after: dt.timedelta = COMPACT_AFTER
) -> Compaction:
    """Merge the adjacent ranges of each source whose lines are of one local day (in
    `timezone`), loaded on the same day with the same status more than `after` ago, a few
    sources per transaction. Loads go on
    meanwhile (they only add rows past the merged ones); forget and rebuild, which update
    ledger rows in place, wait for it. A merged row's run_id lists the runs that loaded it."""
    result = Compaction()
    conn.commit()
    sources = [row[0] for row in conn.execute("SELECT id FROM sources ORDER BY id")]
    conn.commit()
    for at in range(0, len(sources), SOURCES_AT_ONCE):
        some = sources[at : at + SOURCES_AT_ONCE]
        with conn.transaction():
            lock_ledger(conn)
            groups = [
                ",".join(map(str, ids))
                for (ids,) in conn.execute(
                    _GROUPS, {"tz": timezone, "after": after, "sources": some}
                )
            ]
            if groups:
                merged = conn.execute(_MERGE, {"groups": groups}).fetchall()
                conn.execute(_EXTEND, [list(column) for column in zip(*merged, strict=True)])
            result.groups += len(groups)
            result.removed += sum(g.count(",") for g in groups)
    return result
