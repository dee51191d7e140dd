-- For the ledger ranges that put any row into the day %(day)s (zone %(tz)s): how many ranges,
-- the lines they read, the rows they stored (logs + dns_queries + rejects), the rejects.
-- A row belongs to the range of its source that holds its byte offset.
WITH touching AS (SELECT * FROM xray_day_ranges(%(day)s, %(tz)s)),
extent AS (
    SELECT source_id, min(start_offset) AS first, max(end_offset) AS past
    FROM touching GROUP BY source_id
)
SELECT
    (SELECT count(*) FROM touching),
    (SELECT coalesce(sum(lines - erased), 0) FROM touching),
    (SELECT count(*) FROM extent e JOIN logs r
        ON r.source_id = e.source_id AND r.byte_offset >= e.first AND r.byte_offset < e.past)
      + (SELECT count(*) FROM extent e JOIN dns_queries r
        ON r.source_id = e.source_id AND r.byte_offset >= e.first AND r.byte_offset < e.past)
      + (SELECT count(*) FROM extent e JOIN rejects r
        ON r.source_id = e.source_id AND r.byte_offset >= e.first AND r.byte_offset < e.past),
    (SELECT count(*) FROM extent e JOIN rejects r
        ON r.source_id = e.source_id AND r.byte_offset >= e.first AND r.byte_offset < e.past)
