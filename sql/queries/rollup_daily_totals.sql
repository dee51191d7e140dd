-- Rebuild one day of daily_totals from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO daily_totals (day, protocol_id, inbound_tag_id, outbound_tag_id, connections, rejected)
SELECT %(day)s::date, l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id, count(*),
       count(*) FILTER (WHERE l.status = 'rejected')
FROM logs l, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi
GROUP BY l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id
