-- The deferred fold (issue 18; storage/usage_tail.py, docs/api/events.md "Write path").
--
-- usage_fold_state: one row. seq = the largest events.seq whose event is folded into the
-- rollups (usage_minute/hour/day/unique) and the usage marks. On SQLite an ingest commit
-- appends events only and is acknowledged; a later transaction folds the events above seq
-- and advances it, in the same transaction as the rollup upserts, so a crash at any point
-- folds every event exactly once. Readers fold the tail first (EventService.settle). Every
-- event stored before this migration was folded at ingest: seq starts at the largest one.
-- PostgreSQL folds at ingest (commit order is not seq order there) and leaves the row as
-- it is.
CREATE TABLE usage_fold_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO usage_fold_state (id, seq) SELECT 1, coalesce(max(seq), 0) FROM events;
