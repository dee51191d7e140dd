-- The Parquet archive of closed days (core/archive): what each day's files hold, so that the
-- check, the maintenance and the readers know which days are archived without listing a
-- folder or a bucket. The archive's own manifest.json beside the files says the same, so that
-- the files stand alone.
CREATE TABLE IF NOT EXISTS archive_files (
    day date NOT NULL,
    table_name text NOT NULL,
    part integer NOT NULL,
    path text NOT NULL,          -- relative to the archive's root
    rows bigint NOT NULL,
    bytes bigint NOT NULL,
    sha256 text NOT NULL,
    PRIMARY KEY (day, table_name, part)
);

CREATE TABLE IF NOT EXISTS archive_days (
    day date PRIMARY KEY,
    schema_version integer NOT NULL,
    rows bigint NOT NULL,        -- logs, dns_queries and rejects together
    written_at timestamptz NOT NULL DEFAULT now(),
    verified_at timestamptz,     -- the last check that found the files whole and equal to the day
    problem text                 -- what the last check found wrong (NULL: nothing)
);
