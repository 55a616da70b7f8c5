-- One fold-queue row per ingest statement instead of one per event (issue 18, the PostgreSQL
-- write path; storage/usage_tail.py, storage/events_repo.py).
--
-- usage_fold_queue held the seq of every stored event not folded yet: one more B-tree insert
-- per event in the ingest commit, and one delete per event in the fold. usage_fold_batches
-- holds the same set as one row per ingest statement: seqs = the seq values that statement
-- stored (an ingest COPY reserves its seqs up front, so the set is usually one range). A fold
-- takes the oldest rows (FOR UPDATE, or SKIP LOCKED in the background), folds the events
-- whose seq lie in them, and deletes each row it took whole or rewrites it to the part it
-- left. The index on upper(seqs) answers the readers' tail check (the largest unfolded seq).
-- Rows queued before this migration move over as one row.
CREATE TABLE usage_fold_batches (
    id BIGSERIAL PRIMARY KEY,
    seqs int8multirange NOT NULL CHECK (NOT isempty(seqs))
);
CREATE INDEX usage_fold_batches_upper ON usage_fold_batches (upper(seqs));
INSERT INTO usage_fold_batches (seqs)
SELECT range_agg(int8range(seq, seq + 1)) FROM usage_fold_queue HAVING count(*) > 0;
DROP TABLE usage_fold_queue;
