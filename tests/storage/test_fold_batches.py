"""PostgreSQL's write path (issue 18): a new group is appended by one binary COPY with its
seqs reserved up front and queued for the fold as ONE ``usage_fold_batches`` row; a group with
a stored event falls back to the statement that skips it (savepoint rolled back, nothing of the
COPY left); a fold that takes part of a queue row leaves exactly the rest in it; and a database
with the old per-event queue (``usage_fold_queue``) migrates with its unfolded events counted
once (migration 0860, on both engines)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.timeutil import to_micros
from allotment.domain.windows import WindowSize
from allotment.services.meter_queries import MeterQuery
from allotment.storage import migrate, seq_ranges, usage_tail
from allotment.storage.database import open_database, split_statements
from tests.storage.test_prefold import METERS, NOW, T0, _same, ev, rebuilt, snapshot
from tests.support import frozen_container


@pytest.fixture
def c(db_url: str, backend: str) -> Iterator[Container]:
    if backend != "postgres":
        pytest.skip("PostgreSQL's fold queue")
    with frozen_container(db_url, NOW) as container:
        yield container


def _queue(c: Container) -> list[seq_ranges.Ranges]:
    with c.db.read() as tx:
        rows = tx.execute("SELECT seqs::text FROM usage_fold_batches ORDER BY id")
    return [seq_ranges.parse(str(r[0])) for r in rows]


def _seqs(c: Container) -> list[int]:
    with c.db.read() as tx:
        return [int(r[0]) for r in tx.execute("SELECT seq FROM events ORDER BY seq")]


def _count(c: Container, slug: str) -> int:
    q = MeterQuery(from_=T0, to=NOW, window_size=WindowSize.DAY)
    return sum(int(r.value) for r in c.meter_queries.query(slug, q).rows)


def test_a_new_group_is_one_queue_row_of_exactly_its_seqs(c: Container) -> None:
    c.meters.create(METERS[3])  # COUNT
    rng = random.Random(1)
    first = [ev(rng, i) for i in range(40)]
    second = [ev(rng, 100 + i) for i in range(25)]
    assert c.events.write_batches([first[:30], first[30:]]) == [30, 10]
    assert c.events.write_batches([second]) == [25]
    queue = _queue(c)
    assert len(queue) == 2  # one row per ingest statement, not one per event
    assert [seq_ranges.count(q) for q in queue] == [40, 25]
    assert sorted(v for q in queue for v in seq_ranges.values(q)) == _seqs(c)
    assert _count(c, "calls") == 65
    assert _queue(c) == []


def test_a_group_with_a_stored_event_falls_back_and_queues_only_what_it_stored(
    c: Container,
) -> None:
    c.meters.create(METERS[3])
    rng = random.Random(2)
    batch = [ev(rng, i) for i in range(20)]
    assert c.events.write_batches([batch[:5]]) == [5]
    before = set(_seqs(c))
    # the COPY meets a stored row: rolled back to its savepoint, rows and queue row gone
    assert c.events.write_batches([batch, batch[3:8]]) == [15, 0]
    seqs = _seqs(c)
    assert len(seqs) == 20
    queue = _queue(c)
    assert len(queue) == 2
    assert set(seq_ranges.values(queue[1])) == set(seqs) - before
    assert _count(c, "calls") == 20
    assert c.events.write_batches([batch]) == [0]  # all stored: nothing queued
    assert _queue(c) == []
    assert _count(c, "calls") == 20


def test_a_fold_smaller_than_a_queue_row_leaves_exactly_the_rest(c: Container) -> None:
    for m in METERS:
        c.meters.create(m)
    rng = random.Random(3)
    c.events.write_batches([[ev(rng, i) for i in range(50)]])
    c.events.write_batches([[ev(rng, 100 + i) for i in range(30)]])
    seqs = _seqs(c)
    folded = 0
    for size in (7, 20, 30, 50):
        with c.db.write() as tx:
            n, _ = usage_tail.fold_pending(tx, size)
        assert n == min(size, len(seqs) - folded)
        folded += n
        left = [v for q in _queue(c) for v in seq_ranges.values(q)]
        assert left == seqs[folded:]  # the smallest seqs went first, the rest stayed queued
        with c.db.read() as tx:
            assert usage_tail.lag(tx) == len(seqs) - folded
    assert _queue(c) == []
    _same(snapshot(c), rebuilt(c))


def test_a_bounded_fold_takes_only_seqs_up_to_the_bound(c: Container) -> None:
    c.meters.create(METERS[3])
    rng = random.Random(4)
    c.events.write_batches([[ev(rng, i) for i in range(30)]])
    seqs = _seqs(c)
    upto = seqs[11]
    with c.db.write() as tx:
        n, _ = usage_tail.fold_pending(tx, 1000, upto=upto)
        assert n == 12
        assert not usage_tail.waiting(tx, upto)
        assert usage_tail.waiting(tx, upto + 1)
    assert usage_tail.tail_end(c.db) == seqs[-1]
    assert _count(c, "calls") == 30


def test_the_old_per_event_queue_migrates_and_counts_once(db_url: str, backend: str) -> None:
    """An unfolded tail written before migration 0860 (per-event ``usage_fold_queue`` rows on
    PostgreSQL; SQLite's watermark) is counted once after it, on both engines."""
    db = open_database(db_url)
    t = to_micros(NOW)
    try:
        migrate.applied(db)  # creates schema_migrations
        for m in migrate.available(db.dialect):
            if m.version >= "0860":
                break
            with db.write() as tx:
                for statement in split_statements(m.script):
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                           "VALUES (?, ?, ?)", (m.version, m.name, t))  # fmt: skip
        rng = random.Random(5)
        rows = [ev(rng, i) for i in range(12)]
        with db.write() as tx:
            for r in rows:
                tx.execute(
                    "INSERT INTO events (source, id, type, subject, time, ingested_at, event) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*r[:5], t, r[5]),
                )
            if db.dialect == "postgresql":
                tx.execute("INSERT INTO usage_fold_queue (seq) SELECT seq FROM events")
        assert migrate.pending(db)[0].version == "0860"
        migrate.migrate(db, t)
        with db.read() as tx:
            assert usage_tail.lag(tx) == 12
            if db.dialect == "postgresql":
                queued = tx.execute("SELECT seqs::text FROM usage_fold_batches")
                seqs = [int(r[0]) for r in tx.execute("SELECT seq FROM events ORDER BY seq")]
                assert [seq_ranges.parse(str(q[0])) for q in queued] == [seq_ranges.of_sorted(seqs)]
        assert usage_tail.tail_end(db) == 12
    finally:
        db.close()
    c = Container(Settings(db_url=db_url), open_database(db_url), FrozenClock(NOW))
    c.start()
    try:
        c.meters.create(METERS[3])  # its backfill folds the tail first, then rebuilds
        c.events.write_batches([[ev(rng, 100 + i) for i in range(8)]])
        assert _count(c, "calls") == 20
        with c.db.read() as tx:
            assert usage_tail.lag(tx) == 0
    finally:
        c.close()
