-- For the ledger ranges that put any row into the day %(day)s (zone %(tz)s): how many ranges,
-- the lines they read, the rows they stored (logs + dns_queries + rejects), the rejects.
WITH b AS (SELECT lo, hi FROM xray_day_bounds(%(day)s, %(tz)s)),
touching AS (
    SELECT DISTINCT ingest_id FROM logs, b WHERE ts >= b.lo AND ts < b.hi
    UNION SELECT DISTINCT ingest_id FROM dns_queries, b WHERE ts >= b.lo AND ts < b.hi
    UNION SELECT DISTINCT ingest_id FROM rejects, b WHERE ts >= b.lo AND ts < b.hi
)
SELECT
    (SELECT count(*) FROM touching),
    (SELECT coalesce(sum(lines - erased), 0) FROM ingest_ledger
       WHERE id IN (SELECT * FROM touching)),
    (SELECT count(*) FROM logs WHERE ingest_id IN (SELECT * FROM touching))
      + (SELECT count(*) FROM dns_queries WHERE ingest_id IN (SELECT * FROM touching))
      + (SELECT count(*) FROM rejects WHERE ingest_id IN (SELECT * FROM touching)),
    (SELECT count(*) FROM rejects WHERE ingest_id IN (SELECT * FROM touching))
