-- Rebuild one day of daily_node_users from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO daily_node_users (day, node, user_id, connections, rejected, first_seen, last_seen)
SELECT %(day)s::date, coalesce(s.node, ''), l.user_id, count(*),
       count(*) FILTER (WHERE l.status = 'rejected'), min(l.ts), max(l.ts)
FROM logs l JOIN sources s ON s.id = l.source_id, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi
GROUP BY 2, 3
