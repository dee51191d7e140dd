-- Rebuild one day of hourly_traffic from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO hourly_traffic (day, hour, protocol_id, inbound_tag_id, outbound_tag_id,
                            connections, rejected)
SELECT %(day)s::date, date_trunc('hour', l.ts, %(tz)s), l.dest_protocol_id, l.inbound_tag_id,
       l.outbound_tag_id, count(*), count(*) FILTER (WHERE l.status = 'rejected')
FROM logs l, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi
GROUP BY 2, l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id
