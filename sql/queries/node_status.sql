-- Per registered node: newest loaded line, lines and bytes loaded today (local day in %(tz)s),
-- and the bytes loaded from each of its files (what is landed beyond them waits). No token hash.
SELECT n.name, n.created_at, s.newest AS newest_line,
       coalesce(t.lines, 0)::bigint AS lines_today, coalesce(t.bytes, 0)::bigint AS bytes_today,
       coalesce(f.loaded, '{}'::jsonb) AS loaded_by_path
FROM nodes n
LEFT JOIN LATERAL (
    SELECT max(l.last_ts) AS newest FROM ingest_ledger l
    JOIN sources src ON src.id = l.source_id WHERE src.node = n.name
) s ON true
LEFT JOIN LATERAL (
    SELECT sum(l.lines) AS lines, sum(l.end_offset - l.start_offset) AS bytes
    FROM ingest_ledger l
    JOIN sources src ON src.id = l.source_id
    WHERE src.node = n.name
      AND l.loaded_at >= date_trunc('day', now() AT TIME ZONE %(tz)s) AT TIME ZONE %(tz)s
) t ON true
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(p.path, p.loaded) AS loaded FROM (
        SELECT src.path, sum(l.end_offset - l.start_offset) AS loaded
        FROM ingest_ledger l JOIN sources src ON src.id = l.source_id
        WHERE src.node = n.name GROUP BY src.path
    ) p
) f ON true
ORDER BY n.name
