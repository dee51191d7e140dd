-- Per local day x user x destination: connections. A user's page reads its top destinations
-- for whole past days from here instead of from every one of the user's rows in logs.
CREATE TABLE IF NOT EXISTS daily_user_destinations (
    day date NOT NULL,
    user_id integer,
    endpoint_id integer NOT NULL,
    connections bigint NOT NULL,
    CONSTRAINT daily_user_destinations_key UNIQUE NULLS NOT DISTINCT (day, user_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS daily_user_destinations_user_day
    ON daily_user_destinations (user_id, day);
