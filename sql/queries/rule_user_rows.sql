-- The rows of the candidate users from `from` to `to`, as the user rules read them.
SELECT l.ts, u.email AS "user", coalesce(host(l.src_ip), l.src_host) AS source, s.node,
       p.country, p.asn, t.name AS outbound_tag, l.status
FROM logs l
JOIN users u ON u.id = l.user_id
JOIN sources s ON s.id = l.source_id
LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host)
LEFT JOIN tags t ON t.id = l.outbound_tag_id
WHERE l.user_id = ANY(%(users)s) AND l.ts >= %(from)s AND l.ts <= %(to)s
