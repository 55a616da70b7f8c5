-- Customers (OpenMeter's customer; docs/api/customers.md). Soft-deleted: deleted_at.
-- A live key is unique among live customers (customers_key_live); a subject key belongs to at
-- most one live customer (customer_subjects_live). A subject mapping removed by a replace, or
-- by the customer's deletion (with_customer = 1), keeps its row with deleted_at set.
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    key TEXT,
    name TEXT NOT NULL,
    primary_email TEXT,
    currency TEXT,
    billing_address TEXT,
    description TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX customers_key_live ON customers (key) WHERE deleted_at IS NULL;
CREATE INDEX customers_created ON customers (created_at);

CREATE TABLE customer_subjects (
    customer_id TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT,
    with_customer INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX customer_subjects_live ON customer_subjects (subject_key) WHERE deleted_at IS NULL;
CREATE INDEX customer_subjects_customer ON customer_subjects (customer_id);
