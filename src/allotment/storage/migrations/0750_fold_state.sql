-- The deferred fold (issue 18; storage/usage_tail.py, docs/api/events.md "Deferred fold").
--
-- An ingest commit appends events only and is acknowledged; later transactions fold them
-- into the rollups (usage_minute/hour/day/unique) and the usage marks, and record them folded
-- in the same transaction as the upserts, so a crash at any point folds every event exactly
-- once. Readers fold the tail first (EventService.settle).
--
-- usage_fold_state (SQLite): one row. seq = the largest events.seq folded. SQLite has one
-- writer, so seq order is commit order: the events above seq are exactly the unfolded ones.
-- Every event stored before this migration was folded at ingest: seq starts at the largest.
--
-- usage_fold_queue (PostgreSQL, where a smaller seq may commit later): the seq of every
-- stored event not folded yet, inserted by the ingest statement itself; a fold deletes the
-- rows it folds. Empty at first: everything stored before was folded at ingest.
CREATE TABLE usage_fold_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO usage_fold_state (id, seq) SELECT 1, coalesce(max(seq), 0) FROM events;

CREATE TABLE usage_fold_queue (
    seq BIGINT PRIMARY KEY
);
