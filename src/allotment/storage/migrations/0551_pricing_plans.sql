-- Pricing plans of the /v1 catalog (docs/catalog.md): a plan, its numbered versions (never
-- edited once written; the newest is the active one) and the subscriptions of customers to one
-- version, with their per-customer overrides. Typed values are stored in their wire form
-- (JSON text: {"number": "600"}, {"enums": [...]}, {"switch": true}, {"amount": {...}}).
CREATE TABLE pricing_plans (
    id TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    active_version INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    archived_at BIGINT
);
CREATE UNIQUE INDEX pricing_plans_reference ON pricing_plans (reference);

CREATE TABLE pricing_plan_versions (
    plan_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    entitlements TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (plan_id, version)
);

CREATE TABLE pricing_plan_subscriptions (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    plan_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT,
    overrides TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX pricing_plan_subscriptions_one_active
    ON pricing_plan_subscriptions (customer_id) WHERE status = 'ACTIVE';
CREATE INDEX pricing_plan_subscriptions_customer
    ON pricing_plan_subscriptions (customer_id, id);

-- One counter bumped by every catalog write (features, plans, subscriptions): the in-memory
-- cache of GET /v1/customers/{ref}/entitlements is valid while it is unchanged.
CREATE TABLE catalog_version (
    id INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 0);
