-- The rows of `rejects` from lo to hi (a reject without a time stays in PostgreSQL).
SELECT (extract(epoch FROM r.ts) * 1000000)::int8 AS ts, s.node, s.path AS source,
       r.source_id, r.byte_offset, r.reason, r.raw
FROM rejects r
JOIN sources s ON s.id = r.source_id
WHERE r.ts >= %(lo)s AND r.ts < %(hi)s
