-- The rows of `dns_queries` from lo to hi, as archive_logs.sql reads `logs`.
SELECT (extract(epoch FROM d.ts) * 1000000)::int8 AS ts, s.node, s.path AS source,
       d.source_id, d.byte_offset, d.server, d.status, d.domain,
       array_to_json(d.answers)::text AS answers,
       (extract(epoch FROM d.elapsed) * 1000000)::int8 AS elapsed, d.error
FROM dns_queries d
JOIN sources s ON s.id = d.source_id
WHERE d.ts >= %(lo)s AND d.ts < %(hi)s
