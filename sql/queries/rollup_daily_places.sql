-- Rebuild one day of daily_places from logs and ip_places: %(day)s, %(tz)s. The rows are
-- grouped on the stored columns first, host() and the place look-up on the groups only.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s)),
grouped AS (
    SELECT l.src_ip, l.src_host, count(*) AS n,
           count(*) FILTER (WHERE l.status = 'rejected') AS r
    FROM logs l, bounds b
    WHERE l.ts >= b.lo AND l.ts < b.hi
    GROUP BY 1, 2
)
INSERT INTO daily_places (day, country, asn, connections, rejected)
SELECT %(day)s::date, p.country, p.asn, sum(g.n), sum(g.r)
FROM grouped g
LEFT JOIN ip_places p ON p.address = coalesce(host(g.src_ip), g.src_host, '')
GROUP BY 2, 3
