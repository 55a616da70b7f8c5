"""Group commit (one writer per process, several requests per transaction) on a real database
(SQLite and PostgreSQL): first one wins across requests of one group, counts per request, a
request that cannot be written does not fail the others, an outage fails the group, abandoned
requests are skipped. No timing assertions: groups are formed deterministically by holding the
writer inside its first commit while more requests queue behind it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.errors import Unavailable
from allotment.domain.events import PreparedEvent, validate_event
from allotment.services.events import prepare
from allotment.services.group_commit import GroupCommitter
from allotment.storage.database import open_database
from tests.support import fold_tail

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2025, 5, 30, 10, 0, tzinfo=UTC)


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    container = Container(Settings(db_url=db_url), open_database(db_url), FrozenClock(NOW))
    container.start()
    yield container
    container.events.close()
    container.close()


def ev(i: int | str, *, minutes: float = 0, tokens: Any = 1, source: str = "app") -> PreparedEvent:
    raw = {
        "specversion": "1.0",
        "id": str(i),
        "source": source,
        "type": "prompt",
        "subject": "cust",
        "time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "data": {"tokens": tokens},
    }
    return prepare(validate_event(raw, "event", NOW))


def meter(c: Container) -> str:
    return c.meters.create(
        {"slug": "tokens", "aggregation": "SUM", "eventType": "prompt", "valueProperty": "$.tokens"}
    ).id


def totals(c: Container, meter_id: str) -> tuple[int, Decimal]:
    fold_tail(c.db)
    with c.db.read() as tx:
        rows = tx.execute("SELECT count, sum FROM usage_minute WHERE meter_id = ?", (meter_id,))
    return sum(int(r[0]) for r in rows), sum((Decimal(str(r[1])) for r in rows), Decimal(0))


def stored(c: Container) -> dict[tuple[str, str], dict[str, Any]]:
    with c.db.read() as tx:
        rows = tx.execute("SELECT source, id, event FROM events")
    return {(str(r[0]), str(r[1])): msgspec.json.decode(str(r[2])) for r in rows}


class Gate:
    """Wraps a write function: the first call waits until released, and every call's batches
    are recorded, so a test can queue requests behind a commit in progress."""

    def __init__(self, write: Any) -> None:
        self.write = write
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        self.calls.append(len(batches))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        result: list[int] = self.write(batches)
        return result


def held(c: Container, write: Any = None, **kwargs: Any) -> tuple[GroupCommitter, Gate]:
    gate = Gate(write or c.events.write_batches)
    return GroupCommitter(gate, **kwargs), gate


def results(futures: list[Future[int]]) -> list[int | str]:
    out: list[int | str] = []
    for f in futures:
        exc = f.exception(timeout=30)
        out.append(type(exc).__name__ if exc is not None else f.result())
    return out


# ---------------------------------------------------------------- the writer, directly


def test_one_transaction_first_one_wins_across_requests(c: Container) -> None:
    mid = meter(c)
    counts = c.events.write_batches(
        [
            [ev(1, tokens=1), ev(2, tokens=2)],
            [ev(1, minutes=30, tokens=100), ev(3, tokens=3)],  # 1: same key, other time: dup
            [ev(2, tokens=200), ev(1, source="other", tokens=4), ev(3, tokens=300)],
            [ev(1), ev(2), ev(3)],
        ]
    )
    assert counts == [2, 1, 1, 0]
    assert totals(c, mid) == (4, Decimal(10))
    events = stored(c)
    assert events[("app", "1")]["data"] == {"tokens": 1}
    assert events[("app", "1")]["time"] == "2025-05-30T10:00:00Z"
    # and against what is already stored
    assert c.events.write_batches([[ev(3), ev(4, tokens=5)], [ev(4, tokens=6)]]) == [1, 0]
    assert totals(c, mid) == (5, Decimal(15))


def test_many_threads_one_event_each_with_repeats(c: Container) -> None:
    mid = meter(c)
    futures: list[Future[int]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(40):
            f = c.events.submit([ev(i * 16 + k)])
            retry = c.events.submit([ev(i * 16 + k, tokens=999)])  # a client's retry
            with lock:
                futures.extend([f, retry])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = results(futures)
    assert sum(int(n) for n in got) == 640
    assert got[0::2].count(1) + got[1::2].count(1) == 640  # each key stored by exactly one
    won = [1 if first == 1 else 999 for first in got[0::2]]  # each key's stored tokens
    assert totals(c, mid) == (640, Decimal(sum(won)))
    if c.db.dialect == "sqlite":  # one writer: the first queued of each key wins
        assert won == [1] * 640
    # PostgreSQL's two writers: of two in flight at once, the first to commit wins (as between
    # two processes; docs/api/events.md)
    assert c.events.committer.groups <= 1280


# ---------------------------------------------------------------- groups, deterministically


def test_queued_requests_share_one_commit_and_the_first_wins(c: Container) -> None:
    mid = meter(c)
    committer, gate = held(c)
    try:
        first = committer.submit([ev("a")])
        assert gate.entered.wait(30)
        queued = [
            committer.submit([ev("b", tokens=2)]),
            committer.submit([ev("b", minutes=5, tokens=50), ev("c", tokens=3)]),
            committer.submit([ev("a", tokens=70)]),  # already committed by the held group
            committer.submit([ev("c", tokens=30), ev("d", tokens=4)]),
        ]
        gate.release.set()
        assert results([first, *queued]) == [1, 1, 1, 0, 1]
        assert gate.calls == [1, 4]  # the four queued requests: one transaction
        assert committer.groups == 2
        assert totals(c, mid) == (4, Decimal(10))
    finally:
        committer.close()


def test_group_size_is_bounded_by_events(c: Container) -> None:
    committer, gate = held(c, max_events=5)
    try:
        first = committer.submit([ev(0)])
        assert gate.entered.wait(30)
        queued = [committer.submit([ev(10 * k + j) for j in range(2)]) for k in range(1, 6)]
        gate.release.set()
        assert results([first, *queued]) == [1, 2, 2, 2, 2, 2]
        assert gate.calls == [1, 2, 2, 1]  # 2+2 events (a third batch would pass 5), 2+2, 2
    finally:
        committer.close()


def test_a_request_that_cannot_be_written_does_not_fail_the_others(c: Container) -> None:
    mid = meter(c)
    poison = ev("poison")

    def write(batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        if any(poison in b for b in batches):
            raise RuntimeError("cannot store this one")
        return c.events.write_batches(batches)

    committer, gate = held(c, write)
    try:
        first = committer.submit([ev(1)])
        assert gate.entered.wait(30)
        queued = [
            committer.submit([ev(2, tokens=2)]),
            committer.submit([ev(3, tokens=3), poison]),
            committer.submit([ev(4, tokens=4), ev(2, tokens=20)]),
        ]
        gate.release.set()
        assert results([first, *queued]) == [1, 1, "RuntimeError", 1]
        assert gate.calls == [1, 3, 1, 1, 1]  # the group failed, then each alone
        assert totals(c, mid) == (3, Decimal(7))  # nothing of the failed request was stored
        assert ("app", "3") not in stored(c)
    finally:
        committer.close()


def test_an_outage_fails_the_whole_group_and_a_retry_stores_once(c: Container) -> None:
    mid = meter(c)
    down = threading.Event()

    def write(batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        if down.is_set():
            raise Unavailable("database unavailable: test")
        return c.events.write_batches(batches)

    committer, gate = held(c, write)
    try:
        first = committer.submit([ev(1)])
        assert gate.entered.wait(30)
        down.set()
        queued = [committer.submit([ev(2)]), committer.submit([ev(3)])]
        gate.release.set()
        assert results([first, *queued]) == ["Unavailable"] * 3
        assert gate.calls == [1, 2]  # no retry one by one: the database is down
        down.clear()
        retried = [committer.submit([ev(k)]) for k in (1, 2, 3)]
        assert results(retried) == [1, 1, 1]
        assert totals(c, mid) == (3, Decimal(3))
    finally:
        committer.close()


def test_abandoned_requests_are_skipped(c: Container) -> None:
    mid = meter(c)
    committer, gate = held(c)
    try:
        first = committer.submit([ev(1)])
        assert gate.entered.wait(30)
        gone = committer.submit([ev(2)])
        kept = committer.submit([ev(3)])
        assert gone.cancel()  # the client went away before the writer took it
        gate.release.set()
        assert results([first, kept]) == [1, 1]
        assert gone.cancelled()
        assert totals(c, mid) == (2, Decimal(2))
        assert ("app", "2") not in stored(c)
    finally:
        committer.close()


def test_close_finishes_what_is_queued(c: Container) -> None:
    committer, gate = held(c)
    first = committer.submit([ev(1)])
    assert gate.entered.wait(30)
    queued = [committer.submit([ev(k)]) for k in range(2, 6)]
    closer = threading.Thread(target=committer.close)
    closer.start()
    gate.release.set()
    closer.join(30)
    assert results([first, *queued]) == [1, 1, 1, 1, 1]
    assert committer.submit([]).result() == 0


def test_parallel_writers_commit_the_next_group_while_one_is_held(c: Container) -> None:
    """``parallel=2`` (PostgreSQL's writer): while the first group's commit is held, the
    requests queued behind it go in the other thread's group, committed and answered before
    the first; closing finishes both threads' work."""
    if c.db.dialect != "postgresql":
        pytest.skip("parallel commits are PostgreSQL's (SQLite has one writer at a time)")
    mid = meter(c)
    committer, gate = held(c, parallel=2)
    first = committer.submit([ev(1)])
    assert gate.entered.wait(30)
    queued = [committer.submit([ev(2, tokens=2)]), committer.submit([ev(1, tokens=50)])]
    assert results(queued) == [1, 1]  # the held group has not committed ev(1) yet
    assert not first.done()
    gate.release.set()
    assert results([first]) == [0]  # the other group's ev(1) committed first: it won
    assert gate.calls == [1, 2]
    assert totals(c, mid) == (2, Decimal(52))
    late = [committer.submit([ev(k)]) for k in range(3, 8)]
    closer = threading.Thread(target=committer.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive()
    assert results(late) == [1, 1, 1, 1, 1]
    assert committer.groups >= 3


def test_an_empty_queue_while_the_other_writer_commits_is_not_idleness(c: Container) -> None:
    """``parallel=2``: the background step (the fold) waits for ``background_after_s`` after
    the last commit with NO group in flight; while one writer thread commits, the other sees
    an empty queue (the clients are waiting for that commit) and must not start folding."""
    if c.db.dialect != "postgresql":
        pytest.skip("parallel commits are PostgreSQL's (SQLite has one writer at a time)")
    meter(c)
    writing = threading.Event()
    release = threading.Event()
    during: list[bool] = []
    calls = 0

    def write(batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second group is held, well past background_after_s
            writing.set()
            assert release.wait(30)
        return c.events.write_batches(batches)

    def background() -> bool:
        during.append(writing.is_set() and not release.is_set())
        return False

    committer = GroupCommitter(write, background=background, background_after_s=0.05, parallel=2)
    try:
        assert committer.submit([ev(1)]).result(30) == 1  # a commit: background is due again
        second = committer.submit([ev(2)])
        assert writing.wait(30)
        threading.Event().wait(0.5)  # ten times background_after_s with the group in flight
        assert True not in during
        release.set()
        assert second.result(30) == 1
        for _ in range(300):  # once nothing is in flight, the idle step runs
            if len(during) >= 2:
                break
            threading.Event().wait(0.01)
        assert during[-1] is False
        assert len(during) >= 2
    finally:
        release.set()
        committer.close()


def test_a_long_idle_fold_step_leaves_the_other_writer_free_for_requests(c: Container) -> None:
    """``parallel=2``: an idle background step (the fold, up to 20 000 events) runs outside
    the lock the writer threads take groups under, one thread at a time: a request arriving
    meanwhile is committed by the other thread at once, not after the step."""
    if c.db.dialect != "postgresql":
        pytest.skip("parallel commits are PostgreSQL's (SQLite has one writer at a time)")
    meter(c)
    armed = threading.Event()
    entered = threading.Event()
    release = threading.Event()

    def background() -> bool:
        if armed.is_set() and not entered.is_set():
            entered.set()
            assert release.wait(30)  # a long fold step
        return False

    committer = GroupCommitter(
        c.events.write_batches, background=background, background_after_s=0.05, parallel=2
    )
    try:
        armed.set()
        assert committer.submit([ev(1)]).result(30) == 1
        assert entered.wait(30)  # one thread is in the idle step, held
        assert committer.submit([ev(2)]).result(10) == 1  # the other one commits meanwhile
        assert not release.is_set()
    finally:
        release.set()
        committer.close()


def test_an_event_loops_requests_are_answered_on_the_loop(c: Container) -> None:
    """``submit_to_loop`` (the HTTP door): the loop's own futures, resolved after the commit
    (one callback per group), a cancelled one skipped, a failed group raising in each."""
    mid = meter(c)
    down = threading.Event()

    def write(batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        if down.is_set():
            raise Unavailable("database unavailable: test")
        return c.events.write_batches(batches)

    committer, gate = held(c, write)

    async def main() -> tuple[list[int], bool, list[str]]:
        loop = asyncio.get_running_loop()
        first = committer.submit_to_loop([ev(1)], loop)
        assert await asyncio.to_thread(gate.entered.wait, 30)
        queued = [committer.submit_to_loop([ev(k, tokens=k)], loop) for k in (2, 3)]
        gone = committer.submit_to_loop([ev(4)], loop)
        gone.cancel()
        gate.release.set()
        got = list(await asyncio.gather(first, *queued))
        down.set()
        failed = await asyncio.gather(
            committer.submit_to_loop([ev(5)], loop), return_exceptions=True
        )
        return got, gone.cancelled(), [type(e).__name__ for e in failed]

    try:
        got, cancelled, failed = asyncio.run(main())
        assert got == [1, 1, 1]
        assert cancelled
        assert failed == ["Unavailable"]
        assert gate.calls[:2] == [1, 2]  # the two queued behind the held commit: one group
        assert totals(c, mid) == (3, Decimal(6))
        assert ("app", "4") not in stored(c)
    finally:
        committer.close()
