-- Notifications (docs/notifications.md): webhook channels, rules, events and the outbox.
--
-- notification_channels / notification_rules: soft-deleted (deleted_at), JSON columns as TEXT.
CREATE TABLE notification_channels (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    url TEXT NOT NULL,
    custom_headers TEXT,
    signing_secret TEXT NOT NULL,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE TABLE notification_rules (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    thresholds TEXT,
    feature_ids TEXT,
    channel_ids TEXT NOT NULL,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

-- notification_events: one row per notification; payload is the exact JSON body delivered.
CREATE TABLE notification_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    subject_key TEXT,
    feature_id TEXT,
    feature_key TEXT,
    payload TEXT NOT NULL,
    annotations TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX notification_events_created ON notification_events (created_at, id);

-- notification_deliveries: the outbox, one row per (event, channel), written in the
-- transaction that creates the event. state PENDING/SENDING/RESENDING/SUCCESS/FAILED;
-- a SENDING row whose lease has run out is claimable again (a crashed sender).
CREATE TABLE notification_deliveries (
    event_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts_made INTEGER NOT NULL,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    lease_owner TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, channel_id)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at);

CREATE TABLE notification_attempts (
    event_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    status_code INTEGER,
    duration_ms BIGINT NOT NULL,
    body TEXT NOT NULL,
    url TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (event_id, channel_id, attempt)
);

-- notification_marks: the facts that make a rule fire at most once: a threshold crossed
-- (mark = the threshold's key) or a reset seen (mark = 'reset') in the usage period starting
-- at period_start. Written in the same transaction as the event it caused.
CREATE TABLE notification_marks (
    rule_id TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    mark TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (rule_id, entitlement_id, period_start, mark)
);
