-- API keys and the audit trail of admin changes (docs/security.md).
--
-- api_keys: one row per issued key. secret_hash is the SHA-256 hex digest of the whole secret
-- (the secret itself is never stored); prefix is its first characters in clear. A revoked key
-- keeps its row (revoked_at set) so the audit trail can still name it; a name is unique among
-- live keys. Any row at all turns authentication on (ALLOTMENT_AUTH=auto).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- audit_events: one row per admin change that succeeded. actor is the key's name (or "cli",
-- or "(auth off)"), key_id the key's id when a key was used. before/after are JSON text: the
-- resource as GET showed it before the change, and the change's response body.
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    key_id TEXT,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    resource TEXT NOT NULL,
    status INTEGER NOT NULL,
    before_json TEXT,
    after_json TEXT
);
