-- Hour and day rollups (docs/api/meter-queries.md, "Performance"), and an integer shadow of
-- every rollup sum.
--
-- usage_hour / usage_day: the same columns as usage_minute, one row per (meter, subject, UTC
-- hour / UTC day, group); bucket = the hour's / day's start in epoch µs. Maintained by ingest
-- in the same transaction as usage_minute (storage/usage_write.py).
--
-- isum: the row's sum as a BIGINT when it is an integer with |isum| <= 2^53, else NULL.
-- Invariant: isum IS NULL OR isum = sum. Reads add sum(isum) to sum(sum) over the rows whose
-- isum is NULL (on SQLite that saves the Python dec_sum aggregate; here it is harmless).
ALTER TABLE usage_minute ADD COLUMN isum BIGINT;
UPDATE usage_minute SET isum = sum::bigint
WHERE sum IS NOT NULL AND sum = trunc(sum) AND abs(sum) <= 9007199254740992;

CREATE TABLE usage_hour (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum NUMERIC,
    min NUMERIC,
    max NUMERIC,
    latest_time BIGINT,
    latest_value NUMERIC,
    isum BIGINT,
    PRIMARY KEY (meter_id, subject, bucket, group_key)
);
CREATE INDEX usage_hour_meter_bucket ON usage_hour (meter_id, bucket);

CREATE TABLE usage_day (
    meter_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum NUMERIC,
    min NUMERIC,
    max NUMERIC,
    latest_time BIGINT,
    latest_value NUMERIC,
    isum BIGINT,
    PRIMARY KEY (meter_id, subject, bucket, group_key)
);
CREATE INDEX usage_day_meter_bucket ON usage_day (meter_id, bucket);

INSERT INTO usage_hour (meter_id, subject, bucket, group_key, count, sum, min, max,
                        latest_time, latest_value)
SELECT meter_id, subject, minute - mod(mod(minute, 3600000000) + 3600000000, 3600000000) AS b,
       group_key, sum(count), sum(sum), min(min), max(max), max(latest_time),
       (array_agg(latest_value ORDER BY latest_time DESC NULLS LAST))[1]
FROM usage_minute GROUP BY meter_id, subject, b, group_key;

INSERT INTO usage_day (meter_id, subject, bucket, group_key, count, sum, min, max,
                       latest_time, latest_value)
SELECT meter_id, subject, bucket - mod(mod(bucket, 86400000000) + 86400000000, 86400000000) AS b,
       group_key, sum(count), sum(sum), min(min), max(max), max(latest_time),
       (array_agg(latest_value ORDER BY latest_time DESC NULLS LAST))[1]
FROM usage_hour GROUP BY meter_id, subject, b, group_key;

UPDATE usage_hour SET isum = sum::bigint
WHERE sum IS NOT NULL AND sum = trunc(sum) AND abs(sum) <= 9007199254740992;
UPDATE usage_day SET isum = sum::bigint
WHERE sum IS NOT NULL AND sum = trunc(sum) AND abs(sum) <= 9007199254740992;
