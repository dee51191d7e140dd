-- Rebuild one day of daily_user_destinations from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO daily_user_destinations (day, user_id, endpoint_id, connections)
SELECT %(day)s::date, l.user_id, l.endpoint_id, count(*)
FROM logs l, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi AND l.endpoint_id IS NOT NULL
GROUP BY l.user_id, l.endpoint_id
-- a user's rows of a day next to each other: a user's page reads a few pages a day, not one
-- page a row
ORDER BY l.user_id
