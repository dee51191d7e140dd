-- Rebuild one day of daily_traffic from logs: %(day)s, %(tz)s.
WITH bounds AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s))
INSERT INTO daily_traffic (day, user_id, protocol_id, inbound_tag_id, outbound_tag_id,
                           connections, rejected, distinct_destinations, distinct_source_ips)
SELECT %(day)s::date, l.user_id, l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id,
       count(*),
       count(*) FILTER (WHERE l.status = 'rejected'),
       count(DISTINCT l.endpoint_id),
       count(DISTINCT coalesce(host(l.src_ip), l.src_host))
FROM logs l, bounds b
WHERE l.ts >= b.lo AND l.ts < b.hi
GROUP BY l.user_id, l.dest_protocol_id, l.inbound_tag_id, l.outbound_tag_id
