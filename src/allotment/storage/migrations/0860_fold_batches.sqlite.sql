-- The PostgreSQL fold queue becomes usage_fold_batches (see 0860_fold_batches.postgresql.sql).
-- SQLite folds above the watermark usage_fold_state.seq and never used usage_fold_queue.
DROP TABLE usage_fold_queue;
