-- Allotment schema, PostgreSQL half. Instants: BIGINT microseconds since the epoch (UTC).
-- Amounts: NUMERIC (exact). JSON: TEXT. Flags: INTEGER 0/1.

CREATE TABLE meters (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    aggregation TEXT NOT NULL,
    event_type TEXT NOT NULL,
    value_property TEXT,
    group_by TEXT NOT NULL DEFAULT '{}',
    event_from BIGINT,
    metadata TEXT,
    annotations TEXT,
    managed_by TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX meters_slug_live ON meters (slug) WHERE deleted_at IS NULL;
CREATE INDEX meters_event_type ON meters (event_type);

CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time BIGINT NOT NULL,
    ingested_at BIGINT NOT NULL,
    event TEXT NOT NULL
);
CREATE UNIQUE INDEX events_dedup ON events (source, id);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_type_time ON events (type, time);

CREATE TABLE usage_minute (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    minute BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum NUMERIC,
    min NUMERIC,
    max NUMERIC,
    latest_time BIGINT,
    latest_value NUMERIC,
    PRIMARY KEY (meter_id, subject, minute, group_key)
);
CREATE INDEX usage_minute_meter_minute ON usage_minute (meter_id, minute);

CREATE TABLE usage_unique (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    minute BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (meter_id, subject, minute, group_key, value)
);

CREATE TABLE subjects (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    display_name TEXT,
    metadata TEXT,
    stripe_customer_id TEXT,
    current_period_start BIGINT,
    current_period_end BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX subjects_key_live ON subjects (key) WHERE deleted_at IS NULL;

CREATE TABLE features (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    meter_slug TEXT,
    meter_group_by_filters TEXT,
    advanced_meter_group_by_filters TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    archived_at BIGINT
);
CREATE UNIQUE INDEX features_key_live ON features (key) WHERE archived_at IS NULL;

CREATE TABLE entitlements (
    id TEXT PRIMARY KEY,
    subject_key TEXT NOT NULL,
    feature_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    type TEXT NOT NULL,
    metadata TEXT,
    annotations TEXT,
    config TEXT,
    usage_period_interval TEXT,
    usage_period_anchor BIGINT,
    measure_usage_from BIGINT,
    is_soft_limit INTEGER NOT NULL DEFAULT 0,
    issue_after_reset NUMERIC,
    issue_after_reset_priority INTEGER,
    preserve_overage_at_reset INTEGER NOT NULL DEFAULT 0,
    active_from BIGINT NOT NULL,
    active_to BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX entitlements_one_live ON entitlements (subject_key, feature_key) WHERE deleted_at IS NULL;
CREATE INDEX entitlements_subject ON entitlements (subject_key);
CREATE INDEX entitlements_feature ON entitlements (feature_id);

CREATE TABLE usage_resets (
    id TEXT PRIMARY KEY,
    entitlement_id TEXT NOT NULL,
    reset_at BIGINT NOT NULL,
    anchor BIGINT NOT NULL,
    interval_iso TEXT NOT NULL,
    preserve_overage INTEGER,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX usage_resets_entitlement_at ON usage_resets (entitlement_id, reset_at);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    entitlement_id TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    priority INTEGER NOT NULL,
    effective_at BIGINT NOT NULL,
    expiration_duration TEXT,
    expiration_count INTEGER,
    expires_at BIGINT,
    max_rollover NUMERIC NOT NULL,
    min_rollover NUMERIC NOT NULL,
    recurrence_interval TEXT,
    recurrence_anchor BIGINT,
    metadata TEXT,
    annotations TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    voided_at BIGINT,
    deleted_at BIGINT
);
CREATE INDEX grants_entitlement ON grants (entitlement_id);
CREATE INDEX grants_subject ON grants (subject_key);

CREATE TABLE balance_snapshots (
    entitlement_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (entitlement_id, at)
);

CREATE TABLE portal_tokens (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    allowed_meter_slugs TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    invalidated_at BIGINT
);
CREATE INDEX portal_tokens_subject ON portal_tokens (subject);

-- Exact-decimal helpers with the same names SQLite registers in Python.
CREATE FUNCTION dec_add(a NUMERIC, b NUMERIC) RETURNS NUMERIC LANGUAGE SQL IMMUTABLE AS 'SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE a + b END';
CREATE FUNCTION dec_min(a NUMERIC, b NUMERIC) RETURNS NUMERIC LANGUAGE SQL IMMUTABLE AS 'SELECT LEAST(a, b)';
CREATE FUNCTION dec_max(a NUMERIC, b NUMERIC) RETURNS NUMERIC LANGUAGE SQL IMMUTABLE AS 'SELECT GREATEST(a, b)';

CREATE TABLE server_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
