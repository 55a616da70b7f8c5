-- Enforcement (docs/api/enforcement.md): rate-limit logs, reservations, idempotency records.
--
-- enforcement_locks: one row per (customer, feature) or (customer, idempotency key) that an
-- authorize or a settlement serialises on (PostgreSQL: SELECT ... FOR UPDATE, so replicas
-- on one database decide one customer's feature one at a time; SQLite has one writer).
CREATE TABLE enforcement_locks (
    lock_key TEXT PRIMARY KEY
);

-- rate_limit_logs: the sliding-window log of one (customer, rate-limit feature): the requests
-- allowed during the last window as a JSON array [[at, n], ...], oldest first (at: epoch
-- microseconds; n: requests allowed at that instant).
CREATE TABLE rate_limit_logs (
    customer_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    window_us BIGINT NOT NULL,
    entries TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, feature_key)
);

-- reservations: one per authorize with reserve items. status: held | committed | released |
-- expired (a held one whose every item passed its expires_at is shown as expired before the
-- sweep writes it). outcome: the JSON answer of the first commit or release.
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    settled_at BIGINT,
    outcome TEXT
);
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

-- reservation_items: one per reserved feature. held = 1 while the reservation is held; a held
-- item counts against the budget until expires_at. committed: the amount the commit recorded.
CREATE TABLE reservation_items (
    reservation_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    expires_at BIGINT NOT NULL,
    held INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    value_property TEXT,
    committed NUMERIC,
    PRIMARY KEY (reservation_id, feature_key)
);
CREATE INDEX reservation_items_held ON reservation_items (customer_id, feature_key, expires_at)
    WHERE held = 1;

-- idempotency_records: the first answer of an authorize with an idempotency_key, kept 24 h.
CREATE TABLE idempotency_records (
    customer_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, idem_key)
);
CREATE INDEX idempotency_records_expiry ON idempotency_records (expires_at);
