"""The group commit: a writer thread per process (two on PostgreSQL, taking turns) commits
the batches that many requests queued, together, in one transaction (docs/api/events.md,
"Group commit").

It knows nothing of events, meters or the database: :class:`EventService` gives it the
function that writes a group (``EventService.write_batches``) and the background step it runs
when idle (folding the tail). ``tests/storage/test_group_commit.py`` holds the writer inside
its first commit to form groups deterministically.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from allotment.domain.errors import Unavailable
from allotment.domain.events import PreparedEvent
from allotment.storage.queue_thread import QueueThread

log = logging.getLogger("allotment.ingest")

GROUP_MAX_EVENTS = 20_000
"""Most events one group commit writes (several requests; one request is never split)."""
GROUP_MAX_WAIT_S = 0.0
"""How long the writer waits for more requests once the queue is empty (0: commit at once;
requests that arrive during a commit form the next group)."""
_IDLE_LOOK_S = 0.5
"""With nothing left to do in the background, how often an idle writer thread looks whether
another one's commit left some (``parallel`` > 1)."""
BACKGROUND_RETRY_S = (0.5, 30.0)
"""After a background step fails: the first pause before it is tried again, and the longest
(the pause doubles at each failure in a row)."""
PG_PARALLEL_COMMITS = 2
"""PostgreSQL's writer threads (``parallel``, set by ``EventService``): the next group is
written while one waits for its WAL flush (docs/benchmarks.md, "Issue 18, PostgreSQL single
events")."""


class _Pending:
    """A queued request: its events and the future its count goes to, a thread's
    (:meth:`GroupCommitter.submit`) or an event loop's (``loop`` set:
    :meth:`GroupCommitter.submit_to_loop`)."""

    __slots__ = ("events", "future", "loop")

    def __init__(
        self,
        events: Sequence[PreparedEvent],
        future: Future[int] | asyncio.Future[int],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.events = events
        self.future = future
        self.loop = loop

    def take(self) -> bool:
        """Whether the writer takes it: False when its caller gave up waiting first."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()  # type: ignore[union-attr]
        return not self.future.cancelled()


Outcome = tuple[_Pending, int | BaseException]


def _deliver(outcomes: list[Outcome]) -> None:
    """Resolve each request's future: a thread's at once; an event loop's requests with ONE
    callback per loop for the whole group (one wake-up of the loop, not one per request)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for p, result in outcomes:
        if p.loop is not None:
            by_loop.setdefault(p.loop, []).append((p, result))
        elif isinstance(result, BaseException):
            p.future.set_exception(result)
        else:
            p.future.set_result(result)
    for loop, mine in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, mine)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(outcomes: list[Outcome]) -> None:
    """In the event loop: resolve the futures its requests await."""
    for p, result in outcomes:
        if p.future.done():  # cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            p.future.set_exception(result)
        else:
            p.future.set_result(result)


class GroupCommitter:
    """A process's writer thread (or ``parallel`` of them): commits the batches queued by many
    requests together.

    :meth:`submit` queues an already validated batch and returns a future. The writer takes
    the oldest batch plus every batch queued behind it (up to ``max_events`` events; it waits
    at most ``max_wait_s`` for more once the queue is empty), writes them in ONE transaction
    with ``write`` and resolves each future with its own count only after the commit returned.
    So one fsync serves many requests, and the writer's connection keeps its page cache warm.

    A group that fails with :class:`Unavailable` (the database cannot serve) fails every
    request in it (clients retry; exactly-once makes that safe). Any other failure retries each
    request of the group alone, so one request that cannot be written never fails the others.

    ``background`` (optional) is work the writer does between groups, a step at a time: the
    first step once no request arrived for ``background_after_s`` after a commit, the next
    ones at once while each returns True (more to do) and no request is queued; and one step
    after any group when ``pressing()`` says it cannot wait. A step that raises (the database
    briefly unavailable) is logged and tried again after a pause (:data:`BACKGROUND_RETRY_S`),
    commits or not: work left undone is never forgotten until the next request comes (the
    fold is what notifications and other processes' marks wait for).

    ``parallel`` > 1 (PostgreSQL): that many writer threads, each with its own connection,
    take turns at the queue: one takes a group (under a lock), then commits it while the next
    takes the requests queued meanwhile. So while one group's ``COMMIT`` waits for its WAL
    flush (an fsync: milliseconds), the next group is already on its way, and PostgreSQL
    flushes commits that wait together at once, as it does for many clients' connections
    (docs/benchmarks.md, "Issue 18, PostgreSQL single events"). Groups in flight together are
    independent transactions: a request is answered after its own group's commit, and the
    first one wins between them as between processes (the unique index; the same
    ``(source, id)`` order of inserts in every transaction, so no deadlock).
    """

    def __init__(
        self,
        write: Callable[[Sequence[Sequence[PreparedEvent]]], list[int]],
        *,
        max_events: int = GROUP_MAX_EVENTS,
        max_wait_s: float = GROUP_MAX_WAIT_S,
        name: str = "allotment-ingest-writer",
        background: Callable[[], bool] | None = None,
        background_after_s: float = 0.0,
        pressing: Callable[[], bool] | None = None,
        parallel: int = 1,
    ) -> None:
        self._write = write
        self.max_events = max_events
        self.max_wait_s = max_wait_s
        self._background = background
        self._background_after_s = background_after_s
        self._pressing = pressing
        self._more_background = background is not None
        self._last_commit = time.monotonic() - background_after_s
        """When a writer thread last committed a group: background steps wait until
        ``background_after_s`` after it, whichever thread committed (``parallel`` > 1)."""
        self._committing = 0
        """Groups taken and not committed yet (``parallel`` > 1: while another writer thread
        commits, an empty queue is not idleness; changed under ``_take`` and ``_groups_lock``)."""
        self._folding = 0
        """Threads running an idle background step now (at most ``_spare``)."""
        self._spare = max(1, parallel - 1)
        """How many threads may run an idle step at once: all but one, so one stays free for
        requests (one when there is only one)."""
        self._retry_at = 0.0
        """After a failed background step: not before this ``time.monotonic()``."""
        self._retry_pause = BACKGROUND_RETRY_S[0]
        self._generation = 0
        """Commits so far: a background step that saw nothing more to do but overlapped a
        commit (another thread's) leaves ``_more_background`` set (no lost wake-up)."""
        self._worker: QueueThread[_Pending] = QueueThread(name, self._run, threads=parallel)
        self._queue = self._worker.queue
        self._take = threading.Lock()
        self._groups_lock = threading.Lock()
        self.groups = 0
        """Transactions committed (for tests and diagnostics)."""

    def submit(self, events: Sequence[PreparedEvent]) -> Future[int]:
        future: Future[int] = Future()
        if not events:
            future.set_result(0)
            return future
        self._worker.put(_Pending(events, future))
        return future

    def submit_to_loop(
        self, events: Sequence[PreparedEvent], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[int]:
        """:meth:`submit` for a caller on ``loop`` (the HTTP door): the future is the loop's
        own, and the writer resolves a group's futures on one loop with one callback."""
        future: asyncio.Future[int] = loop.create_future()
        if not events:
            future.set_result(0)
            return future
        self._worker.put(_Pending(events, future, loop))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Let the writer finish what is queued, then stop it."""
        self._worker.close(timeout)

    def _run(self) -> None:
        q = self._queue
        carry: _Pending | None = None
        stopping = False
        while not stopping:
            # parallel > 1: one thread at a time takes a group (the oldest request and
            # every one queued behind it), then commits it outside the lock
            step = False
            group: list[_Pending] = []
            with self._take:
                item: _Pending | None = None
                if carry is not None:
                    item = carry
                elif self._background is not None:
                    try:
                        if self._more_background:
                            # the idle wait once after a commit (by any writer thread);
                            # between background steps only a look; while another writer
                            # thread commits a group, not idle: its requests' clients will
                            # send more; while another folds, this one waits for requests
                            wait = (
                                max(self._last_commit + self._background_after_s, self._retry_at)
                                - time.monotonic()
                            )
                            if self._committing or self._folding >= self._spare:
                                wait = max(wait, self._background_after_s)
                            item = q.get(timeout=wait) if wait > 0 else q.get_nowait()
                        else:  # looking again now and then: another writer may commit
                            item = q.get(timeout=_IDLE_LOOK_S)
                    except queue.Empty:
                        due = (
                            not self._committing
                            and max(self._last_commit + self._background_after_s, self._retry_at)
                            <= time.monotonic()
                        )
                        # an idle step runs outside the take lock, and with parallel > 1 on
                        # one thread at a time: another thread stays free for requests
                        if not (self._more_background and due and self._folding < self._spare):
                            continue
                        step = True
                        with self._groups_lock:
                            self._folding += 1
                else:
                    item = q.get()
                if not step:
                    carry = None
                    if item is None:
                        return
                    size = 0
                    deadline: float | None = None
                    while item is not None:
                        if item.take():  # skip abandoned requests
                            group.append(item)
                            size += len(item.events)
                        if size >= self.max_events:
                            break
                        try:
                            item = q.get_nowait()
                        except queue.Empty:
                            if self.max_wait_s <= 0:
                                break
                            if deadline is None:
                                deadline = time.monotonic() + self.max_wait_s
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                break
                            try:
                                item = q.get(timeout=remaining)
                            except queue.Empty:
                                break
                        if item is None:
                            stopping = True
                        elif group and size + len(item.events) > self.max_events:
                            carry, item = item, None
                    if group:
                        with self._groups_lock:
                            self._committing += 1
            if step:
                try:
                    self._step()
                finally:
                    with self._groups_lock:
                        self._folding -= 1
                continue
            if group:
                try:
                    self._commit(group)
                finally:
                    with self._groups_lock:
                        self._last_commit = time.monotonic()
                        self._committing -= 1
                        self._generation += 1
                if self._background is not None:
                    self._more_background = True
                    if (
                        self._pressing is not None
                        and self._retry_at <= time.monotonic()
                        and self._pressing()
                    ):
                        self._step()

    def _step(self) -> None:
        """One background step; more are due when it says so, or when a commit (by another
        writer thread) happened while it ran."""
        assert self._background is not None
        generation = self._generation
        try:
            more = self._background()
        except Exception:
            pause = self._retry_pause
            self._retry_pause = min(2 * pause, BACKGROUND_RETRY_S[1])
            self._retry_at = time.monotonic() + pause
            self._more_background = True
            log.exception("background step failed (tried again in %.1f s)", pause)
            return
        self._retry_pause = BACKGROUND_RETRY_S[0]
        self._more_background = more or self._generation != generation

    def _commit(self, group: list[_Pending]) -> None:
        try:
            counts = self._write([p.events for p in group])
        except Unavailable as exc:
            _deliver([(p, exc) for p in group])
            return
        except BaseException as exc:
            if len(group) == 1:
                _deliver([(group[0], exc)])
                return
            log.warning("group commit of %d requests failed (%r); retrying each", len(group), exc)
            outcomes: list[Outcome] = []
            for p in group:
                try:
                    (n,) = self._write([p.events])
                except BaseException as one:
                    outcomes.append((p, one))
                else:
                    outcomes.append((p, n))
            _deliver(outcomes)
            return
        with self._groups_lock:
            self.groups += 1
        _deliver(list(zip(group, counts, strict=True)))
