-- The notifications of the incidents' changes: one row per change and target (webhook,
-- telegram, command), so each change is sent once to each, across restarts and retried runs.
-- A row that keeps failing ends as 'dead' with its last error (the dead letter); one about a
-- change older than [alerts] max_age_minutes when first seen (a backfill's) is 'stale'.
ALTER TABLE incident_changes ADD COLUMN IF NOT EXISTS dispatched_at timestamptz;
CREATE INDEX IF NOT EXISTS incident_changes_undispatched ON incident_changes (id)
    WHERE dispatched_at IS NULL;

CREATE TABLE IF NOT EXISTS alert_deliveries (
    change_id bigint NOT NULL REFERENCES incident_changes (id) ON DELETE CASCADE,
    target text NOT NULL CHECK (target IN ('webhook', 'telegram', 'command')),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'dead', 'stale')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    last_error text,
    response text,
    PRIMARY KEY (change_id, target)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- what on_open_command did (or, in a dry run, would have been given), kept with the incident
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS action jsonb;
