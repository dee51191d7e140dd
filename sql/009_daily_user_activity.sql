-- Per local day x user x quarter hour: connections, first and last seen. A user's page cuts its
-- sessions from these rows for whole past days: every gap between two connections inside a
-- quarter hour is shorter than 15 minutes, so sessions cut at gaps of 15 minutes or more come
-- out exactly as from the single connections.
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
