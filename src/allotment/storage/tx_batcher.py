"""Group commit of small decisions' writes on SQLite: many callers' writes in one
transaction and one fsync, each caller answered only after that commit.

A caller hands :meth:`TxBatcher.run` one item (a decision's writes, already decided). The
batcher's thread takes the oldest queued item and every item queued behind it (up to
``max_items``; when the previous group had more than one item, it waits up to ``max_wait_s``
for as many as that group had: see :data:`GROUP_WAIT_S`), writes them all with one call of
``write(tx, items)`` in one transaction —
a few ``executemany`` statements for the whole group, so the thread crosses into SQLite (and
gives up the GIL) a handful of times per group rather than per item — commits, and only then
returns to the callers (:meth:`TxBatcher.run` blocks its caller until then;
:meth:`TxBatcher.submit` returns at once and calls the caller's ``done`` in the batcher's
thread after the commit, so an event loop need not block a thread per decision). Items must
not depend on each other's writes (the enforcement
service's key locks keep two decisions on one key out of one group).

``write`` may refuse some items: it then returns one entry per item, ``None`` for one it
wrote and the error for one it did not (that caller's ``done`` gets it, after the commit of
the others).

A group whose transaction fails with :class:`~allotment.domain.errors.Unavailable` fails every
caller in it (nothing of it was written); any other failure writes each item of the group in a
transaction of its own, so one item that cannot be written never fails the others.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from allotment.domain.errors import Unavailable
from allotment.storage.queue_thread import QueueThread
from allotment.storage.seam import Database, Tx

W = TypeVar("W")
Done = Callable[[BaseException | None], None]
"""Called once in the batcher's thread: ``None`` once the item has committed, else the error
that kept it from being written. It must not raise (nor block for long)."""

MAX_ITEMS = 512
"""Most items in one transaction (a bound on how long one group keeps the write lock)."""

GROUP_WAIT_S = 0.002
"""How long the writer waits, after taking a group's first item, for a group as large as
the previous one (only when that one had more than one item: a lone caller never waits).
Concurrent callers (an event loop deciding for 16 clients) arrive a few hundred µs apart;
without the wait a group took the 2–5 already queued and committed, with it ≈ 7: each
commit is a ``BEGIN``, the WAL write and an fsync (≈ 170 µs of the writer's CPU), and it
resets every other connection's page cache (WAL mode), so fewer commits cost less on both
sides (docs/api/enforcement.md "Cost")."""

GATHER_STEP_S = 0.0005
"""The writer's sleep between two looks at the queue while it waits for a group."""

log = logging.getLogger("allotment.storage")


class TxBatcher(Generic[W]):
    def __init__(
        self,
        db: Database,
        write: Callable[[Tx, list[W]], Sequence[BaseException | None] | None],
        *,
        name: str,
        max_items: int = MAX_ITEMS,
        max_wait_s: float = GROUP_WAIT_S,
    ) -> None:
        self._db = db
        self._write = write
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self._last = 0
        self._worker: QueueThread[tuple[W, Done]] = QueueThread(name, self._loop)
        self._queue = self._worker.queue
        self.groups = 0
        """Transactions committed (for tests and diagnostics)."""

    def run(self, item: W) -> None:
        """Write ``item`` in the next group transaction; return once that has committed."""
        future: Future[None] = Future()

        def done(exc: BaseException | None) -> None:
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)

        self.submit(item, done)
        future.result()

    def submit(self, item: W, done: Done) -> None:
        """Queue ``item`` for the next group transaction and return at once; ``done`` is
        called (in the batcher's thread) when it has committed or failed."""
        self._worker.put((item, done))

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the thread."""
        self._worker.close(timeout)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            self._gather(min(self._last, self.max_items))
            while len(group) < self.max_items:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            self._last = len(group)
            self._commit(group)

    def _gather(self, expect: int) -> None:
        """Wait (at most :attr:`max_wait_s`) until ``expect`` items, the one taken included,
        are queued: in sleeps of :data:`GATHER_STEP_S`, looking at the queue's length in
        between, so that the callers' puts never wake this thread (each wake-up would take
        the GIL from the event loop deciding the next items)."""
        if expect <= 1:
            return  # a lone caller never waits
        deadline = time.monotonic() + self.max_wait_s
        while self._queue.qsize() + 1 < expect:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, GATHER_STEP_S))

    def _commit(self, group: list[tuple[W, Done]]) -> None:
        try:
            with self._db.write() as tx:
                refused = self._write(tx, [item for item, _ in group])
        except Unavailable as exc:
            for _, done in group:
                _call(done, exc)
            return
        except BaseException as exc:
            if len(group) == 1:
                _call(group[0][1], exc)
                return
            log.warning("group write of %d items failed (%r); writing each", len(group), exc)
            for item, done in group:
                try:
                    with self._db.write() as tx:
                        alone = self._write(tx, [item])
                except BaseException as one:
                    _call(done, one)
                else:
                    _call(done, None if alone is None else alone[0])
            return
        self.groups += 1
        for i, (_, done) in enumerate(group):
            _call(done, None if refused is None else refused[i])


def _call(done: Done, exc: BaseException | None) -> None:
    try:
        done(exc)
    except Exception:  # a caller's callback never stops the writer
        log.exception("a group write's completion callback failed")
