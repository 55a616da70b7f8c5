"""The authorize decisions' group writer (storage/tx_batcher.py) on a real database: after a
group of several items it waits for as many before committing the next (one commit instead of
several), and a lone caller never waits. No timing assertions: the first groups are formed
by holding the writer inside its first commit while more items queue behind it, and the wait
is long enough that only the count of items ends it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from allotment.storage.database import Database, Tx
from allotment.storage.decision_checks import Check, ReadChanged, checked
from allotment.storage.tx_batcher import TxBatcher


class Recorder:
    """A write that records each group's items, held inside the first one until released."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, tx: Tx, items: list[int]) -> None:
        tx.execute("SELECT 1")
        self.groups.append(items)
        if len(self.groups) == 1:
            self.inside.set()
            assert self.release.wait(30)


def _submit(batcher: TxBatcher[int], item: int) -> threading.Event:
    done = threading.Event()

    def written(exc: BaseException | None, done: threading.Event = done) -> None:
        assert exc is None
        done.set()

    batcher.submit(item, written)
    return done


def test_after_a_group_of_n_the_next_waits_for_n(db: Database) -> None:
    rec = Recorder()
    batcher: TxBatcher[Any] = TxBatcher(db, rec, name="test-batcher", max_wait_s=60.0)
    try:
        first = _submit(batcher, 0)
        assert rec.inside.wait(10)  # the writer is inside the first commit
        queued = [_submit(batcher, i) for i in (1, 2, 3)]
        rec.release.set()
        assert all(e.wait(10) for e in [first, *queued])
        assert rec.groups == [[0], [1, 2, 3]]
        # the previous group had 3: the writer waits for 3 (here: one at a time, each
        # submitted only once the one before is queued), then commits them together
        later = [_submit(batcher, i) for i in (4, 5, 6)]
        assert all(e.wait(10) for e in later)
        assert rec.groups[2] == [4, 5, 6]
        assert batcher.groups == 3
    finally:
        batcher.close()


def test_a_lone_caller_never_waits(db: Database) -> None:
    rec = Recorder()
    rec.release.set()
    batcher: TxBatcher[Any] = TxBatcher(db, rec, name="test-batcher", max_wait_s=60.0)
    try:
        for i in range(3):  # one at a time: the writer never waits (60 s) for a second item
            assert _submit(batcher, i).wait(10)
        assert rec.groups == [[0], [1], [2]]
    finally:
        batcher.close()


@dataclass
class _Checked:
    n: int
    check: Check | None


def test_an_item_whose_check_fails_is_not_written_and_told(db: Database) -> None:
    """``decision_checks.checked``: each item's read runs in the group's transaction; the
    items whose row is the expected one are written, the others get ReadChanged."""
    wrote: list[int] = []

    def write(tx: Tx, items: list[_Checked]) -> None:
        wrote.extend(i.n for i in items)

    batcher: TxBatcher[_Checked] = TxBatcher(db, checked(write), name="test-checked")
    outcomes: dict[int, BaseException | None] = {}
    done = threading.Event()

    def told(n: int) -> Callable[[BaseException | None], None]:
        def called(exc: BaseException | None) -> None:
            outcomes[n] = exc
            if len(outcomes) == 3:
                done.set()

        return called

    try:
        batcher.submit(_Checked(0, None), told(0))
        batcher.submit(_Checked(1, ("SELECT 1", (), (1,))), told(1))
        batcher.submit(_Checked(2, ("SELECT 2", (), (1,))), told(2))
        assert done.wait(10)
    finally:
        batcher.close()
    assert sorted(wrote) == [0, 1]
    assert outcomes[0] is None
    assert outcomes[1] is None
    assert isinstance(outcomes[2], ReadChanged)
