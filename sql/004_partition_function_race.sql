-- xray_ensure_log_partition, safe when two loaders create the same day at once: the second
-- waits on the advisory lock, then finds the table (a query, which sees the first one's
-- commit) or, at worst, gets duplicate_table and reports "not created".
CREATE OR REPLACE FUNCTION xray_ensure_log_partition(day date, tz text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    part text := format('logs_%s', to_char(day, 'YYYY_MM_DD'));
    lo timestamptz := (day::timestamp) AT TIME ZONE tz;
    hi timestamptz := ((day + 1)::timestamp) AT TIME ZONE tz;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = part
               AND c.relnamespace = 'public'::regnamespace) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('xray_partition_' || part));
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = part
               AND c.relnamespace = 'public'::regnamespace) THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format(
            'CREATE TABLE public.%I (LIKE public.logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
            part
        );
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
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
