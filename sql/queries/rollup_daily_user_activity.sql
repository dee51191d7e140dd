-- Rebuild one day of daily_user_activity from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO daily_user_activity (day, user_id, bucket, connections, first_seen, last_seen)
SELECT %(day)s::date, l.user_id, date_bin('15 minutes', l.ts, TIMESTAMPTZ '2000-01-01 UTC'),
       count(*), min(l.ts), max(l.ts)
FROM logs l, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi
GROUP BY 2, 3
ORDER BY 2, 3  -- a user's rows of a day next to each other
