-- The rejected rows the storm rule judges: those of the sources that rejected rows of
-- [lo, hi] came from, from `from` to `to`, but only of the sources with more rejected rows
-- over the whole span than the limit (counted here, so that a steady trickle of scanners
-- never leaves the database).
WITH touched AS (
    SELECT DISTINCT coalesce(host(src_ip), src_host) AS src FROM logs
    WHERE status = 'rejected' AND ts >= %(lo)s AND ts <= %(hi)s
),
candidates AS (
    SELECT x.src FROM touched x
    JOIN logs l ON coalesce(host(l.src_ip), l.src_host) = x.src
    WHERE l.status = 'rejected' AND l.ts >= %(from)s AND l.ts <= %(to)s
    GROUP BY x.src HAVING count(*) > %(rejected_limit)s
)
SELECT l.ts, NULL AS "user", c.src AS source, s.node, p.country, p.asn,
       NULL AS outbound_tag, l.status
FROM logs l
JOIN candidates c ON c.src = coalesce(host(l.src_ip), l.src_host)
JOIN sources s ON s.id = l.source_id
LEFT JOIN ip_places p ON p.address = c.src
WHERE l.status = 'rejected' AND l.ts >= %(from)s AND l.ts <= %(to)s
