-- Freshness marks for the in-process value-check cache (docs/api/entitlements.md, "Performance").
--
-- usage_marks: one row per (meter, subject) with usage, bumped in every ingest transaction that
-- folds events of that subject into the meter's rollups. version is commit-ordered per row (the
-- upsert holds the row until commit). m0..m7 are a ring: m{v % 8} is the earliest minute (epoch
-- µs) touched by version v, so a reader that is at most 8 versions behind can tell whether any
-- event it has not seen lies before its checkpoint.
CREATE TABLE usage_marks (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    version BIGINT NOT NULL,
    m0 BIGINT,
    m1 BIGINT,
    m2 BIGINT,
    m3 BIGINT,
    m4 BIGINT,
    m5 BIGINT,
    m6 BIGINT,
    m7 BIGINT,
    PRIMARY KEY (meter_id, subject)
) WITHOUT ROWID;

-- value_versions: bumped by every write to one subject's entitlements for one feature key
-- (create, override, delete, reset, grant create/void).
CREATE TABLE value_versions (
    subject_key TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (subject_key, feature_key)
) WITHOUT ROWID;

-- value_catalog: one row, bumped by every feature and meter write.
CREATE TABLE value_catalog (
    id INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO value_catalog (id, version) VALUES (1, 0);
