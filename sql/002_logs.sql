-- The access log, range-partitioned by day on ts; dnsLog lines; everything else as rejects.
CREATE TABLE IF NOT EXISTS logs (
    ts timestamptz NOT NULL,
    source_id integer NOT NULL REFERENCES sources (id),
    byte_offset bigint NOT NULL,
    ingest_id bigint NOT NULL,
    src_protocol_id smallint REFERENCES protocols (id),
    -- the source as an address when it is one; src_host keeps the text when it is not
    -- (DNS, DoH, @, unix socket names, masked or redacted addresses)
    src_ip inet,
    src_host text,
    src_port integer,
    status text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    dest_protocol_id smallint REFERENCES protocols (id),
    endpoint_id bigint REFERENCES endpoints (id),
    dest_url text,
    inbound_tag_id integer REFERENCES tags (id),
    outbound_tag_id integer REFERENCES tags (id),
    user_id integer REFERENCES users (id),
    reason text,
    CONSTRAINT logs_pkey PRIMARY KEY (source_id, byte_offset, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX IF NOT EXISTS logs_ts_idx ON logs (ts);
CREATE INDEX IF NOT EXISTS logs_user_ts_idx ON logs (user_id, ts);
CREATE INDEX IF NOT EXISTS logs_endpoint_ts_idx ON logs (endpoint_id, ts);

CREATE TABLE IF NOT EXISTS dns_queries (
    ts timestamptz,
    source_id integer NOT NULL REFERENCES sources (id),
    byte_offset bigint NOT NULL,
    ingest_id bigint NOT NULL,
    server text,
    status text,
    domain text,
    answers text[],
    elapsed interval,
    error text,
    CONSTRAINT dns_queries_pkey PRIMARY KEY (source_id, byte_offset)
);
CREATE INDEX IF NOT EXISTS dns_queries_ts_idx ON dns_queries (ts);

-- Lines that are neither access nor DNS records: kept with the reason, never dropped.
CREATE TABLE IF NOT EXISTS rejects (
    source_id integer NOT NULL REFERENCES sources (id),
    byte_offset bigint NOT NULL,
    ingest_id bigint NOT NULL,
    ts timestamptz,
    reason text NOT NULL,
    raw text NOT NULL,
    CONSTRAINT rejects_pkey PRIMARY KEY (source_id, byte_offset)
);
CREATE INDEX IF NOT EXISTS rejects_ts_idx ON rejects (ts);

-- Creates the day's partition of logs if missing: a standalone table with a CHECK that
-- matches the bounds (so ATTACH needs no scan), then ATTACH, which locks logs only in
-- SHARE UPDATE EXCLUSIVE mode (readers and writers go on). Bounds are midnight to midnight
-- in `tz`, the zone of the Xray clock. Returns true when it created the partition.
CREATE OR REPLACE FUNCTION xray_ensure_log_partition(day date, tz text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    part text := format('logs_%s', to_char(day, 'YYYY_MM_DD'));
    lo timestamptz := (day::timestamp) AT TIME ZONE tz;
    hi timestamptz := ((day + 1)::timestamp) AT TIME ZONE tz;
BEGIN
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('xray_partition_' || part));
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE public.%I (LIKE public.logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (ts >= %L AND ts < %L)',
        part, part || '_bounds', lo, hi
    );
    EXECUTE format(
        'ALTER TABLE public.logs ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
        part, lo, hi
    );
    EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', part, part || '_bounds');
    RETURN true;
END;
$$;
