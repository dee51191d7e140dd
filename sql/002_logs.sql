-- The access log, range-partitioned by day on ts; dnsLog lines; everything else as rejects.
CREATE TABLE IF NOT EXISTS logs (
    ts timestamptz NOT NULL,
    source_id integer NOT NULL,
    byte_offset bigint NOT NULL,
    ingest_id bigint NOT NULL,
    src_protocol_id smallint,
    -- the source as an address when it is one; src_host keeps the text when it is not
    -- (DNS, DoH, @, unix socket names, masked or redacted addresses)
    src_ip inet,
    src_host text,
    src_port integer,
    status text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    dest_protocol_id smallint,
    endpoint_id bigint,
    dest_url text,
    inbound_tag_id integer,
    outbound_tag_id integer,
    user_id integer,
    reason text,
    CONSTRAINT logs_pkey PRIMARY KEY (source_id, byte_offset, ts)
) PARTITION BY RANGE (ts);

-- Foreign keys of logs. An enforced key costs a lookup per row and per key (measured: seven
-- keys made a load four times slower), and the loader resolves every id itself in the same
-- transaction, so on PostgreSQL 18+ they are declared NOT ENFORCED: the relations are in the
-- catalog for tools and readers, without the per-row check. Older servers get none.
DO $$
DECLARE
    fk record;
BEGIN
    IF current_setting('server_version_num')::int < 180000 THEN
        RETURN;
    END IF;
    FOR fk IN
        SELECT * FROM (VALUES
            ('logs_source_id_fkey', 'source_id', 'sources'),
            ('logs_src_protocol_id_fkey', 'src_protocol_id', 'protocols'),
            ('logs_dest_protocol_id_fkey', 'dest_protocol_id', 'protocols'),
            ('logs_endpoint_id_fkey', 'endpoint_id', 'endpoints'),
            ('logs_inbound_tag_id_fkey', 'inbound_tag_id', 'tags'),
            ('logs_outbound_tag_id_fkey', 'outbound_tag_id', 'tags'),
            ('logs_user_id_fkey', 'user_id', 'users')
        ) AS t (name, col, ref)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = fk.name) THEN
            EXECUTE format(
                'ALTER TABLE logs ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) NOT ENFORCED',
                fk.name, fk.col, fk.ref
            );
        END IF;
    END LOOP;
END;
$$;

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
