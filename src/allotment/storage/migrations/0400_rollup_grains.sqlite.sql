-- Hour and day rollups (docs/api/meter-queries.md, "Performance"), and an integer shadow of
-- every rollup sum.
--
-- usage_hour / usage_day: the same columns as usage_minute, one row per (meter, subject, UTC
-- hour / UTC day, group); bucket = the hour's / day's start in epoch µs. Maintained by ingest
-- in the same transaction as usage_minute (storage/usage_write.py).
--
-- isum: the row's sum as an INTEGER when it is an integer with |isum| <= 2^53, else NULL.
-- Invariant: isum IS NULL OR isum = sum. Reads add sum(isum) (native, exact integer
-- arithmetic) to dec_sum(sum) over the rows whose isum is NULL, so only non-integer or huge
-- sums go through the Python aggregate.
ALTER TABLE usage_minute ADD COLUMN isum INTEGER;
UPDATE usage_minute SET isum = CAST(sum AS INTEGER)
WHERE sum IS NOT NULL AND CAST(CAST(sum AS INTEGER) AS TEXT) = sum
  AND abs(CAST(sum AS INTEGER)) <= 9007199254740992;

CREATE TABLE usage_hour (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum TEXT,
    min TEXT,
    max TEXT,
    latest_time BIGINT,
    latest_value TEXT,
    isum INTEGER,
    PRIMARY KEY (meter_id, subject, bucket, group_key)
) WITHOUT ROWID;
CREATE INDEX usage_hour_meter_bucket ON usage_hour (meter_id, bucket);

CREATE TABLE usage_day (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum TEXT,
    min TEXT,
    max TEXT,
    latest_time BIGINT,
    latest_value TEXT,
    isum INTEGER,
    PRIMARY KEY (meter_id, subject, bucket, group_key)
) WITHOUT ROWID;
CREATE INDEX usage_day_meter_bucket ON usage_day (meter_id, bucket);

-- Backfill. latest_value is a bare column next to the query's only built-in max(): SQLite
-- takes it from the row holding max(latest_time) (one row per minute, so no ties).
INSERT INTO usage_hour (meter_id, subject, bucket, group_key, count, sum, min, max,
                        latest_time, latest_value)
SELECT meter_id, subject, minute - (((minute % 3600000000) + 3600000000) % 3600000000) AS b,
       group_key, sum(count), dec_sum(sum), dec_minagg(min), dec_maxagg(max),
       max(latest_time), latest_value
FROM usage_minute GROUP BY meter_id, subject, b, group_key;

INSERT INTO usage_day (meter_id, subject, bucket, group_key, count, sum, min, max,
                       latest_time, latest_value)
SELECT meter_id, subject, bucket - (((bucket % 86400000000) + 86400000000) % 86400000000) AS b,
       group_key, sum(count), dec_sum(sum), dec_minagg(min), dec_maxagg(max),
       max(latest_time), latest_value
FROM usage_hour GROUP BY meter_id, subject, b, group_key;

UPDATE usage_hour SET isum = CAST(sum AS INTEGER)
WHERE sum IS NOT NULL AND CAST(CAST(sum AS INTEGER) AS TEXT) = sum
  AND abs(CAST(sum AS INTEGER)) <= 9007199254740992;
UPDATE usage_day SET isum = CAST(sum AS INTEGER)
WHERE sum IS NOT NULL AND CAST(CAST(sum AS INTEGER) AS TEXT) = sum
  AND abs(CAST(sum AS INTEGER)) <= 9007199254740992;
