-- Console sessions (docs/security.md, docs/console.md): a browser cannot send a Bearer header,
-- so the operator console trades an admin key for a session cookie at its login form.
--
-- secret_hash is the SHA-256 hex digest of the cookie's random secret (the secret itself is
-- never stored); key_id is the admin key that logged in: a session is honoured only while that
-- key is live and admin, so revoking the key ends its sessions on every replica at once.
-- expires_at bounds a session's life (absolute, from its creation); expired rows are deleted by
-- the next login.
CREATE TABLE console_sessions (
    secret_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
