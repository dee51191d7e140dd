-- The rows of `logs` from lo to hi with their names resolved (an archived file stands alone);
-- ts as epoch microseconds (read as CSV, see core/db/frames.py).
SELECT (extract(epoch FROM l.ts) * 1000000)::int8 AS ts, s.node, s.path AS source,
       l.source_id, l.byte_offset, sp.name AS src_protocol, host(l.src_ip) AS src_ip,
       l.src_host, l.src_port, l.status, dp.name AS dest_protocol, e.host AS dest_host,
       e.port AS dest_port, l.dest_url, ti.name AS inbound_tag, tout.name AS outbound_tag,
       u.email AS "user", l.reason
FROM logs l
JOIN sources s ON s.id = l.source_id
LEFT JOIN protocols sp ON sp.id = l.src_protocol_id
LEFT JOIN protocols dp ON dp.id = l.dest_protocol_id
LEFT JOIN endpoints e ON e.id = l.endpoint_id
LEFT JOIN tags ti ON ti.id = l.inbound_tag_id
LEFT JOIN tags tout ON tout.id = l.outbound_tag_id
LEFT JOIN users u ON u.id = l.user_id
WHERE l.ts >= %(lo)s AND l.ts < %(hi)s
