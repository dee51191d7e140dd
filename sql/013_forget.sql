-- Erasure of a user (`xray-pipeline forget`). The SHA-256 of each forgotten email, so that a
-- later load of the same bytes (a rebuild, a re-ingest, a late replay) drops that user's lines
-- again: the email itself is not kept.
CREATE TABLE IF NOT EXISTS forgotten_users (
    email_sha256 text PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);

-- Lines of a loaded range that are not stored because their user was forgotten: the
-- reconciliation compares the rows with `lines - erased`.
ALTER TABLE ingest_ledger ADD COLUMN IF NOT EXISTS erased integer NOT NULL DEFAULT 0;
