-- Rejected connections, newest first: the API's status=rejected pages and counts come off this
-- small partial index (rejected lines are a few percent of a log) instead of walking every
-- row of the window. Building it on a large existing logs blocks loads while it builds.
CREATE INDEX IF NOT EXISTS logs_rejected_ts_idx ON logs (ts) WHERE status = 'rejected';
