-- The users the user rules must judge after the rows of [lo, hi]: those the rows touched who
-- could break a rule from `from` to `to` (the window before and after): more distinct sources
-- over the whole span than their IP limit (a window holds no more than the span), or a
-- connection to a watched tag among the new rows (a window over the tagged limit ends at a
-- tagged row). Counted here in one pass over the span, so that the rows of an honest mix
-- never leave the database. The first row (user NULL) carries the rows of [lo, hi], the
-- evaluation's count of rows judged.
WITH pairs AS (
    SELECT user_id, src_ip, src_host,
           count(*) FILTER (WHERE ts >= %(lo)s AND ts <= %(hi)s) AS new_rows,
           bool_or(outbound_tag_id = ANY(%(tag_ids)s))
               FILTER (WHERE ts >= %(lo)s AND ts <= %(hi)s) AS tagged
    FROM logs
    WHERE ts >= %(from)s AND ts <= %(to)s
    GROUP BY user_id, src_ip, src_host
),
users AS (
    SELECT user_id, sum(new_rows) AS new_rows, coalesce(bool_or(tagged), false) AS tagged,
           count(*) FILTER (
               WHERE src_ip IS NOT NULL OR src_host LIKE 'hash:%%' OR src_host LIKE '%%/%%'
           ) AS sources
    FROM pairs
    GROUP BY user_id
)
SELECT NULL::int AS user_id, coalesce(sum(new_rows), 0)::bigint AS judged FROM users
UNION ALL
SELECT u.user_id, NULL FROM users u
LEFT JOIN user_limits ul ON ul.user_id = u.user_id
WHERE u.user_id IS NOT NULL AND u.new_rows > 0
  AND ((%(ip_limit)s::int IS NOT NULL AND u.sources > coalesce(ul.ip_limit, %(ip_limit)s))
       OR (%(tagged_limit)s::int IS NOT NULL AND u.tagged))
