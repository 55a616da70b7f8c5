"""The deferred fold (storage/usage_tail.py): ingest commits append events only, the
rollups follow in fold transactions of their own. Whatever the cut points — requests grouped
in any way, the tail folded in chunks of any size, a meter created while events are still
unfolded, a fold that fails half way — the rollups equal the plain rebuild from the stored
raw events (every grain and column, LATEST ties and UNIQUE_COUNT included), and every read
through the services counts every stored event at once."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.container import Container
from allotment.domain.errors import Unavailable
from allotment.domain.windows import WindowSize
from allotment.services import fold_pacing
from allotment.services.group_commit import PG_PARALLEL_COMMITS
from allotment.services.meter_queries import MeterQuery
from allotment.storage import usage_tail
from tests.storage.test_prefold import METERS, NOW, T0, _same, ev, rebuilt, snapshot
from tests.support import frozen_container


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


def _lag(c: Container) -> int:
    with c.db.read() as tx:
        return usage_tail.lag(tx)


def _count(c: Container, slug: str) -> int:
    q = MeterQuery(from_=T0, to=NOW, window_size=WindowSize.DAY)
    return sum(int(r.value) for r in c.meter_queries.query(slug, q).rows)


def test_acknowledged_events_count_at_the_next_read_before_any_fold(c: Container) -> None:
    c.meters.create(METERS[3])  # COUNT
    rng = random.Random(3)
    batch = [ev(rng, i) for i in range(50)]
    assert c.events.write_batches([batch, batch[:10]]) == [50, 0]
    assert _lag(c) == 50  # nothing folded yet
    assert _count(c, "calls") == 50  # the read folded the tail first
    assert _lag(c) == 0
    assert c.events.write_batches([batch]) == [0]  # dedup is on the stored events
    assert _count(c, "calls") == 50


def test_a_meter_created_over_an_unfolded_tail_counts_it_once(c: Container) -> None:
    c.meters.create(METERS[0])
    rng = random.Random(4)
    c.events.write_batches([[ev(rng, i) for i in range(30)]])
    c.meters.create(METERS[3])  # its backfill folds the tail first, then rebuilds
    assert _lag(c) == 0
    c.events.write_batches([[ev(rng, 100 + i) for i in range(20)]])
    assert _count(c, "calls") == 50
    _same(snapshot(c), rebuilt(c))


def test_a_fold_that_fails_changes_nothing_and_the_next_one_counts_once(
    c: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    for m in METERS:
        c.meters.create(m)
    rng = random.Random(5)
    c.events.write_batches([[ev(rng, i) for i in range(40)]])
    real = usage_tail.usage_write.write_folded

    def fail_after_writing(tx: Any, folded: Any) -> None:
        real(tx, folded)
        raise RuntimeError("killed in the middle of a fold")

    monkeypatch.setattr(usage_tail.usage_write, "write_folded", fail_after_writing)
    with pytest.raises(RuntimeError):
        c.events.settle()
    monkeypatch.undo()
    assert _lag(c) == 40
    c.events.settle()
    _same(snapshot(c), rebuilt(c))


def test_the_writer_folds_the_tail_when_idle(c: Container) -> None:
    c.meters.create(METERS[3])
    rng = random.Random(6)
    assert c.events.submit([ev(rng, i) for i in range(30)]).result(10) == 30
    for _ in range(500):
        if _lag(c) == 0:
            break
        time.sleep(0.01)
    assert _lag(c) == 0  # folded by the writer, no reader asked


def test_a_failed_background_fold_is_tried_again_without_another_request(
    c: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails the writer's folds for a while (a pool timeout, a lock): once it
    serves again the tail is folded, with no request after the failure. Before, a failed step
    waited for the next commit, and with no more ingest the tail stayed unfolded: no reader
    settles it, so notifications (they wait for the fold) stayed silent."""
    c.meters.create(METERS[3])
    real = usage_tail.fold_pending
    failing = threading.Event()
    failing.set()
    failed_at: list[float] = []

    def flaky(tx: Any, limit: int, **kw: Any) -> Any:
        if failing.is_set():
            failed_at.append(time.monotonic())
            raise Unavailable("database unavailable: injected")
        return real(tx, limit, **kw)

    monkeypatch.setattr(usage_tail, "fold_pending", flaky)
    rng = random.Random(7)  # 300: past PostgreSQL's one-round-trip path, which folds inline
    assert c.events.submit([ev(rng, i) for i in range(300)]).result(10) == 300
    acknowledged = time.monotonic()
    assert _lag(c) == 300
    for _ in range(1_000):  # the writer's idle fold after the commit fails
        if failed_at and failed_at[-1] > acknowledged:
            break
        time.sleep(0.01)
    assert failed_at
    assert failed_at[-1] > acknowledged
    failing.clear()  # the database serves again; no request comes
    for _ in range(1_000):
        if _lag(c) == 0:
            break
        time.sleep(0.01)
    assert _lag(c) == 0


def test_a_fold_step_takes_what_the_lag_exceeds_its_bound_by(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fold_pacing, "FOLD_MAX_LAG", 1_000)
    monkeypatch.setattr(fold_pacing, "BACKGROUND_FOLD_CHUNK", 50)
    monkeypatch.setattr(fold_pacing, "LAG_FOLD_CHUNK", 400)
    step = fold_pacing.fold_step
    assert [step(0), step(1_000), step(1_050)] == [50, 50, 50]
    assert [step(1_051), step(1_300), step(1_400), step(9_999)] == [51, 300, 400, 400]
    # an idle writer doubles its chunk per step with no commit in between, up to the cap
    assert [step(0, q) for q in range(5)] == [50, 100, 200, 400, 400]
    assert [step(1_300, 1), step(1_100, 2), step(10**9, 99)] == [300, 200, 400]


def test_a_stream_faster_than_the_fold_keeps_the_tail_within_one_group_of_its_bound(
    c: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 300 events, each bigger than the idle fold's chunk (20): without folding
    the excess after each group the tail would grow by 280 a batch. PostgreSQL's writers
    overlap: one commits the next groups while the other folds after its own."""
    c.events.fold_max_lag = 600  # what ALLOTMENT_FOLD_MAX_LAG=600 sets
    monkeypatch.setattr(fold_pacing, "BACKGROUND_FOLD_CHUNK", 20)
    c.meters.create(METERS[3])  # COUNT
    rng = random.Random(8)
    worst = 0
    for b in range(15):
        batch = [ev(rng, b * 300 + i) for i in range(300)]
        assert c.events.submit(batch).result(30) == 300
        worst = max(worst, _lag(c))
    # SQLite: never more than one group past the bound; PostgreSQL: two groups a writer (a
    # group committed while the other writer's fold is still running, and one queued);
    # without the bound, 600 + 15 * 280
    groups = 2 * PG_PARALLEL_COMMITS if c.db.dialect == "postgresql" else 1
    assert 600 <= worst <= 600 + 300 * groups
    assert _count(c, "calls") == 4_500


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 30), st.integers(0, 4)), min_size=1, max_size=6
    ),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 1000),
)
def test_any_grouping_and_fold_chunking_equals_the_plain_rebuild(
    c: Container,
    monkeypatch: pytest.MonkeyPatch,
    plan: list[tuple[int, int, int]],
    chunk: int,
    seed: int,
) -> None:
    """Hypothesis: groups of requests (with repeats of earlier ids), the tail folded in chunks
    of ``chunk`` events at arbitrary points; the result is the plain rebuild's."""
    with c.db.write() as tx:  # a fresh start for each example (same database)
        for table in (
            "events",
            "event_keys",
            "usage_minute",
            "usage_hour",
            "usage_day",
            "usage_unique",
        ):
            tx.execute(f"DELETE FROM {table}")
        usage_tail.mark_folded(tx)
    if not c.meters.list():
        for m in METERS:
            c.meters.create(m)
    monkeypatch.setattr(usage_tail, "FOLD_CHUNK", chunk)
    rng = random.Random(seed)
    key = 0
    for requests, size, fold_chunks in plan:
        batches = []
        for _ in range(requests):
            batch = [ev(rng, key + i) for i in range(size)]
            batch += [ev(rng, rng.randrange(key + size)) for _ in range(size // 4)]  # repeats
            key += size
            batches.append(batch)
        c.events.write_batches(batches)
        for _ in range(fold_chunks):
            c.events._fold_some()
    got = snapshot(c)
    assert got["usage_minute"]
    assert got["usage_unique"]
    _same(got, rebuilt(c))
