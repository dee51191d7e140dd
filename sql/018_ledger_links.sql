-- A stored row links to the ledger range that loaded it by its own key: its source and byte
-- offset lie in exactly one range of that source (the exclusion constraint's GiST index finds
-- it). Rows no longer carry the id of their ledger row, so that adjacent ranges of a source can
-- be merged into one (the ledger then grows with sources and days, not with loads) without
-- rewriting a row: `ingest_id` is dropped (a catalog change, no table rewrite).
ALTER TABLE logs DROP COLUMN IF EXISTS ingest_id;
ALTER TABLE dns_queries DROP COLUMN IF EXISTS ingest_id;
ALTER TABLE rejects DROP COLUMN IF EXISTS ingest_id;

-- The seconds a load spent on each range (its batch's time shared by lines), summed when
-- ranges merge: /metrics counts the loads' seconds from it.
ALTER TABLE ingest_ledger ADD COLUMN IF NOT EXISTS seconds double precision NOT NULL DEFAULT 0;

-- The ledger ranges that hold the rows of a local day (zone `tz`): per source, every range
-- overlapping the byte offsets from the day's first row to its last. Those ranges are
-- contiguous in the ledger's order, so the rows between the first one's start and the last
-- one's end are exactly the rows they loaded (the reconciliation and the rebuild count and
-- read them so).
CREATE OR REPLACE FUNCTION xray_day_ranges(day date, tz text)
RETURNS SETOF ingest_ledger
LANGUAGE sql STABLE
AS $$
    WITH b AS (SELECT lo, hi FROM xray_day_bounds(day, tz)),
    spans AS (
        SELECT source_id, min(first) AS first, max(last) AS last FROM (
            SELECT source_id, min(byte_offset) AS first, max(byte_offset) AS last
            FROM logs, b WHERE ts >= b.lo AND ts < b.hi GROUP BY 1
            UNION ALL
            SELECT source_id, min(byte_offset), max(byte_offset)
            FROM dns_queries, b WHERE ts >= b.lo AND ts < b.hi GROUP BY 1
            UNION ALL
            SELECT source_id, min(byte_offset), max(byte_offset)
            FROM rejects, b WHERE ts >= b.lo AND ts < b.hi GROUP BY 1
        ) x GROUP BY 1
    )
    SELECT l.* FROM spans s JOIN ingest_ledger l ON l.source_id = s.source_id
        AND int8range(l.start_offset, l.end_offset) && int8range(s.first, s.last, '[]')
$$;
