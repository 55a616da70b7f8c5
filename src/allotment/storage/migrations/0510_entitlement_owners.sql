-- Entitlement owners (docs/api/customers.md): an entitlement belongs to a subject
-- (subject_key = the key, customer_id = '') or to a customer (subject_key = '', customer_id =
-- the customer's id; its usage is the meter's over the customer's key and subject keys).
-- Existing rows are subject-owned. One live entitlement per owner and feature key.
ALTER TABLE entitlements ADD COLUMN customer_id TEXT NOT NULL DEFAULT '';
DROP INDEX entitlements_one_live;
CREATE UNIQUE INDEX entitlements_one_live_owner ON entitlements (subject_key, customer_id, feature_key) WHERE deleted_at IS NULL;
CREATE INDEX entitlements_customer ON entitlements (customer_id, feature_key);
