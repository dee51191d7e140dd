-- Per local day x node x user: connections, rejected, first and last seen. A few rows per user
-- a day: the users list filtered by node reads it, and it says on how many nodes a user was.
-- `node` is '' for files read without a node.
CREATE TABLE IF NOT EXISTS daily_node_users (
    day date NOT NULL,
    node text NOT NULL,
    user_id integer,
    connections bigint NOT NULL,
    rejected bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    CONSTRAINT daily_node_users_key UNIQUE NULLS NOT DISTINCT (day, node, user_id)
);
CREATE INDEX IF NOT EXISTS daily_node_users_node_user ON daily_node_users (node, user_id);
CREATE INDEX IF NOT EXISTS daily_node_users_user_day ON daily_node_users (user_id, day);
