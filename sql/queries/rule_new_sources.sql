-- Per user, each source (as a rule counts it: an address, a masked network or a keyed hash;
-- NULL for DNS or a socket) of the rows of [lo, hi], with the last time it was seen, and
-- whether those rows include a connection to a watched tag.
SELECT user_id,
       CASE WHEN src_ip IS NOT NULL OR src_host LIKE 'hash:%%' OR src_host LIKE '%%/%%'
            THEN coalesce(host(src_ip), src_host) END AS source,
       max(ts) AS last_seen,
       bool_or(outbound_tag_id = ANY(%(tag_ids)s)) AS tagged
FROM logs
WHERE ts >= %(lo)s AND ts <= %(hi)s AND user_id IS NOT NULL
GROUP BY 1, 2
