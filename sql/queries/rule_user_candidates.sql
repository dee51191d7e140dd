-- The users the user rules must judge after the rows of [lo, hi]: those the rows touched who
-- could break a rule from `from` to `to` (the window before and after): more distinct sources
-- over the whole span than their IP limit (a window holds no more than the span), or a
-- connection to a watched tag among the new rows (a window over the tagged limit ends at a
-- tagged row). Counted here, so that the rows of an honest mix never leave the database.
WITH touched AS (
    SELECT user_id, bool_or(outbound_tag_id = ANY(%(tag_ids)s)) AS tagged FROM logs
    WHERE ts >= %(lo)s AND ts <= %(hi)s AND user_id IS NOT NULL
    GROUP BY user_id
),
span AS (
    SELECT l.user_id,
           count(DISTINCT l.src_ip)
           + count(DISTINCT l.src_host) FILTER (
               WHERE l.src_host LIKE 'hash:%%' OR l.src_host LIKE '%%/%%') AS sources
    FROM touched x
    JOIN logs l ON l.user_id = x.user_id AND l.ts >= %(from)s AND l.ts <= %(to)s
    WHERE %(ip_limit)s::int IS NOT NULL
    GROUP BY l.user_id
)
SELECT x.user_id FROM touched x
LEFT JOIN span s ON s.user_id = x.user_id
LEFT JOIN user_limits ul ON ul.user_id = x.user_id
WHERE (%(ip_limit)s::int IS NOT NULL AND s.sources > coalesce(ul.ip_limit, %(ip_limit)s))
   OR (%(tagged_limit)s::int IS NOT NULL AND x.tagged)
