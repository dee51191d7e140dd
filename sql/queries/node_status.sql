-- Per registered node: newest loaded line, lines and bytes loaded today (local day in %(tz)s)
-- and since it was registered, and the bytes loaded from each of its files (what is landed
-- beyond them waits). One pass over the fleet's ledger rows. No token hash.
WITH today AS (SELECT date_trunc('day', now() AT TIME ZONE %(tz)s) AT TIME ZONE %(tz)s AS lo),
per_file AS (
    SELECT src.node, src.path, max(l.last_ts) AS newest,
           sum(l.lines) AS lines, sum(l.end_offset - l.start_offset) AS bytes,
           sum(l.lines) FILTER (WHERE l.loaded_at >= today.lo) AS lines_today,
           sum(l.end_offset - l.start_offset) FILTER (WHERE l.loaded_at >= today.lo)
               AS bytes_today
    FROM ingest_ledger l JOIN sources src ON src.id = l.source_id, today
    WHERE src.node IS NOT NULL
    GROUP BY src.node, src.path
)
SELECT n.name, n.created_at, max(f.newest) AS newest_line,
       coalesce(sum(f.lines_today), 0)::bigint AS lines_today,
       coalesce(sum(f.bytes_today), 0)::bigint AS bytes_today,
       coalesce(jsonb_object_agg(f.path, f.bytes) FILTER (WHERE f.path IS NOT NULL), '{}')
           AS loaded_by_path,
       coalesce(sum(f.lines), 0)::bigint AS lines_loaded,
       coalesce(sum(f.bytes), 0)::bigint AS bytes_loaded
FROM nodes n LEFT JOIN per_file f ON f.node = n.name
GROUP BY n.name, n.created_at
ORDER BY n.name
