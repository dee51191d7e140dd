-- Rebuild one day of daily_user_ips from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO daily_user_ips (day, user_id, source, connections, first_seen, last_seen)
SELECT %(day)s::date, l.user_id, coalesce(host(l.src_ip), l.src_host, '') AS source,
       count(*), min(l.ts), max(l.ts)
FROM logs l, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi
GROUP BY l.user_id, coalesce(host(l.src_ip), l.src_host, '')
