-- Daily rollups of logs, one row per group and local day (the day of the `logs` partition).
CREATE TABLE IF NOT EXISTS daily_traffic (
    day date NOT NULL,
    user_id integer,
    protocol_id smallint,
    inbound_tag_id integer,
    outbound_tag_id integer,
    connections bigint NOT NULL,
    rejected bigint NOT NULL,
    distinct_destinations integer NOT NULL,
    distinct_source_ips integer NOT NULL,
    CONSTRAINT daily_traffic_key
        UNIQUE NULLS NOT DISTINCT (day, user_id, protocol_id, inbound_tag_id, outbound_tag_id)
);
CREATE INDEX IF NOT EXISTS daily_traffic_user_day ON daily_traffic (user_id, day);

CREATE TABLE IF NOT EXISTS daily_user_ips (
    day date NOT NULL,
    user_id integer,
    source text NOT NULL,  -- the source address as text (an IP, or DNS, @name, masked text)
    connections bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    CONSTRAINT daily_user_ips_key UNIQUE NULLS NOT DISTINCT (day, user_id, source)
);
CREATE INDEX IF NOT EXISTS daily_user_ips_user_day ON daily_user_ips (user_id, day);

-- The bounds of a local day in a zone, as the partitions use them.
CREATE OR REPLACE FUNCTION xray_day_bounds(day date, tz text, OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE sql IMMUTABLE
AS $$ SELECT (day::timestamp) AT TIME ZONE tz, ((day + 1)::timestamp) AT TIME ZONE tz $$;
