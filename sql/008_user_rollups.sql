-- Per-user rollups for a user's page, so that whole past days are read from a few rows a day
-- instead of from every one of the user's connections in logs.

-- Per local day x user x destination: connections (the top destinations).
CREATE TABLE IF NOT EXISTS daily_user_destinations (
    day date NOT NULL,
    user_id integer,
    endpoint_id integer NOT NULL,
    connections bigint NOT NULL,
    CONSTRAINT daily_user_destinations_key UNIQUE NULLS NOT DISTINCT (day, user_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS daily_user_destinations_user_day
    ON daily_user_destinations (user_id, day);

-- Per local day x user x quarter hour: connections, first and last seen (the sessions). Every
-- gap between two connections inside a quarter hour is shorter than 15 minutes, so sessions
-- cut at gaps of 15 minutes or more come out exactly the same from these rows.
CREATE TABLE IF NOT EXISTS daily_user_activity (
    day date NOT NULL,
    user_id integer,
    bucket timestamptz NOT NULL,
    connections bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    CONSTRAINT daily_user_activity_key UNIQUE NULLS NOT DISTINCT (day, user_id, bucket)
);
CREATE INDEX IF NOT EXISTS daily_user_activity_user_day ON daily_user_activity (user_id, day);
