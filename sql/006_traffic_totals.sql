-- Compact rollups for the API's totals and time series: per local day (and local hour),
-- protocol, inbound and outbound tag, with no user dimension: a few thousand rows a day
-- whatever the number of users, so /api/logs/stats and /api/timeseries never read millions of
-- rows for past days.
CREATE TABLE IF NOT EXISTS hourly_traffic (
    day date NOT NULL,
    hour timestamptz NOT NULL,  -- start of the local hour (date_trunc('hour', ts, zone))
    protocol_id smallint,
    inbound_tag_id integer,
    outbound_tag_id integer,
    connections bigint NOT NULL,
    rejected bigint NOT NULL,
    CONSTRAINT hourly_traffic_key
        UNIQUE NULLS NOT DISTINCT (day, hour, protocol_id, inbound_tag_id, outbound_tag_id)
);

-- The same counts per local day (a hundred rows a day or so): /api/logs/stats sums these.
CREATE TABLE IF NOT EXISTS daily_totals (
    day date NOT NULL,
    protocol_id smallint,
    inbound_tag_id integer,
    outbound_tag_id integer,
    connections bigint NOT NULL,
    rejected bigint NOT NULL,
    CONSTRAINT daily_totals_key
        UNIQUE NULLS NOT DISTINCT (day, protocol_id, inbound_tag_id, outbound_tag_id)
);
