-- Time-led dedup (issue 18; storage/events_repo.py, storage/usage_tail.py).
--
-- The ingest commit touched four B-trees per event: the table, a unique index on the random
-- (source, id), and the time and (type, time) indexes. It now touches two: the table and ONE
-- unique index on (time, source, id), whose inserts land where the newest events are
-- (append-mostly): a retry of the same event is refused there, at ingest. The rare duplicate
-- that carries another time (an event sent without time is stamped at ingest, so its retry
-- differs) is caught by the deferred fold: it records every event's (source, id) in
-- event_keys (seq = the one event that counts), in sorted batches off the acknowledgement,
-- and deletes a later event whose key is already there before folding anything, in the same
-- transaction. Readers fold the tail first, so no read ever counts both. The same index
-- serves the time ranges the dropped indexes served (events list, partial minutes, backfill
-- scans by type with the type filtered).
CREATE TABLE event_keys (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);
INSERT INTO event_keys (source, id, seq) SELECT source, id, seq FROM events ORDER BY source, id;
DROP INDEX events_dedup;
DROP INDEX events_time;
DROP INDEX events_type_time;
CREATE UNIQUE INDEX events_time_key ON events (time, source, id);
