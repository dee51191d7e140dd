-- A compact rollup for the API's totals and time series: per local day, local hour, protocol,
-- inbound and outbound tag (no user: a few thousand rows a day whatever the number of users),
-- so that /api/logs/stats and /api/timeseries never read millions of rows for past days.
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
