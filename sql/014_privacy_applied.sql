-- `xray-pipeline privacy apply`: the local days rewritten under each [privacy] setting (a
-- signature of it, without the secret), so that a killed run resumes where it stopped.
CREATE TABLE IF NOT EXISTS privacy_applied (
    day date NOT NULL,
    signature text NOT NULL,
    rows bigint NOT NULL DEFAULT 0,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, signature)
);
