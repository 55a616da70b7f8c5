-- Per-meter rollups (storage/meter_rollup.py; docs/api/meter-queries.md, "Performance"): every
-- subject's usage of a meter added up per UTC hour / UTC day and group, for meter queries over
-- all subjects (the console's chart; the meter query without a subject filter or subject
-- group-by). usage_hour / usage_day are per subject: with many subjects and few events per
-- subject and hour, an all-subjects query read about one row per event.
--
-- bucket = the hour's / day's start in epoch µs. count, sum and isum as in usage_hour (sum
-- exact, isum its integer shadow: isum IS NULL OR isum = sum). Written by the same fold, in
-- the same transaction, as usage_hour / usage_day (usage_write.Folded.write).
CREATE TABLE usage_meter_hour (
    meter_id TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum TEXT,
    isum INTEGER,
    PRIMARY KEY (meter_id, bucket, group_key)
) WITHOUT ROWID;

CREATE TABLE usage_meter_day (
    meter_id TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum TEXT,
    isum INTEGER,
    PRIMARY KEY (meter_id, bucket, group_key)
) WITHOUT ROWID;

INSERT INTO usage_meter_hour (meter_id, bucket, group_key, count, sum)
SELECT meter_id, bucket, group_key, sum(count), dec_sum(sum)
FROM usage_hour GROUP BY meter_id, bucket, group_key;

INSERT INTO usage_meter_day (meter_id, bucket, group_key, count, sum)
SELECT meter_id, bucket, group_key, sum(count), dec_sum(sum)
FROM usage_day GROUP BY meter_id, bucket, group_key;

UPDATE usage_meter_hour SET isum = CAST(sum AS INTEGER)
WHERE sum IS NOT NULL AND CAST(CAST(sum AS INTEGER) AS TEXT) = sum
  AND abs(CAST(sum AS INTEGER)) <= 9007199254740992;
UPDATE usage_meter_day SET isum = CAST(sum AS INTEGER)
WHERE sum IS NOT NULL AND CAST(CAST(sum AS INTEGER) AS TEXT) = sum
  AND abs(CAST(sum AS INTEGER)) <= 9007199254740992;
