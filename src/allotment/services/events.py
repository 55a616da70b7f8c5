"""Events: exactly-once ingest with rollup maintenance, and the raw event listing.

The writer thread that commits many requests' batches in one transaction is
:class:`~allotment.services.group_commit.GroupCommitter` (``services/group_commit.py``); this
module gives it what to write (:meth:`EventService.write_batches`) and what to do when idle
(fold the tail, ``storage/usage_tail.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import msgspec

from allotment.domain import limits
from allotment.domain.errors import InvalidInput
from allotment.domain.events import CloudEvent, PreparedEvent
from allotment.domain.json_bounds import exact_decimal
from allotment.domain.meters import Meter, extract
from allotment.domain.timeutil import format_rfc3339, from_micros, to_micros
from allotment.services import fold_pacing
from allotment.services.group_commit import PG_PARALLEL_COMMITS, GroupCommitter
from allotment.storage import events_repo, meters_repo, usage_tail, usage_write
from allotment.storage.database import Tx

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.storage.database import Database

log = logging.getLogger("allotment.ingest")

_encoder = msgspec.json.Encoder(decimal_format="number")
_decoder = msgspec.json.Decoder(float_hook=exact_decimal)

PREFOLD_MIN_EVENTS = 32
"""Requests with at least this many events are folded into rollup rows on the request's
thread before they join the group commit (smaller ones are folded by the writer: the extra
meter read would cost more than it saves)."""

_by_id = itemgetter(1)
_by_source = itemgetter(0)


def _sort_by_key(rows: list[PreparedEvent]) -> None:
    """Sort ``rows`` in ``(source, id)`` order: by id, then (stable) by source. Comparing one
    string per step instead of building and comparing key tuples: 40 -> 11 ms for a group of
    16 000 events (timeit; 5.5 ms when each request arrives sorted by id, see
    :meth:`EventService.prefold`) — time the single writer spends holding the interpreter
    lock."""
    rows.sort(key=_by_id)
    rows.sort(key=_by_source)


class PrefoldedBatch(list[PreparedEvent]):
    """A request's events plus what they add to the rollups, computed off the writer thread.

    The writer uses ``folded`` only if every event of the batch turns out new and the live
    meters of the batch's event types, read inside the write transaction, are still
    ``meters``; otherwise it folds the new events itself. So a prefold only moves work.
    """

    def __init__(
        self,
        events: Sequence[PreparedEvent],
        *,
        distinct: int,
        types: frozenset[str],
        meters: list[Meter],
        folded: usage_write.Folded | None,
    ) -> None:
        super().__init__(events)
        self.distinct = distinct
        self.types = types
        self.meters = meters
        self.folded = folded


@dataclass(frozen=True)
class EventQuery:
    """``GET /api/v1/events`` parameters (already parsed; windows are checked here)."""

    from_: datetime | None = None
    to: datetime | None = None
    ingested_at_from: datetime | None = None
    ingested_at_to: datetime | None = None
    id: str | None = None
    subject: str | None = None
    has_error: bool | None = None
    limit: int = limits.EVENTS_LIST_LIMIT_DEFAULT


def prepare(e: CloudEvent) -> PreparedEvent:
    """A validated :class:`CloudEvent` in its storable form."""
    return (
        e.source,
        e.id,
        e.type,
        e.subject,
        e.time_us,
        _encoder.encode(e.to_wire()).decode(),
        e.data,
    )


class EventService:
    """Collaborators: the database and clock."""

    def __init__(self, db: Database, clock: Clock, *, fold_max_lag: int | None = None) -> None:
        self._db = db
        self._clock = clock
        self.fold_max_lag = fold_pacing.FOLD_MAX_LAG if fold_max_lag is None else fold_max_lag
        """Unfolded events past which the writer folds after every commit
        (``ALLOTMENT_FOLD_MAX_LAG``; ``fold_pacing.FOLD_MAX_LAG``)."""
        self.deferred = True
        """Ingest commits append events only; the fold into the rollups follows in
        transactions of its own (``storage/usage_tail.py``), on the writer thread when it is
        idle, and on any reader's thread through :meth:`settle` before it reads usage."""
        self._unfolded = 0
        """Events this process appended and has not folded yet (an estimate for the writer's
        ``fold_pacing.FOLD_MAX_LAG``; :meth:`settle` asks the database, which every process
        shares)."""
        self._settling = 0
        """Readers of this process folding the tail now (:meth:`settle`; see
        ``fold_pacing.FOLD_MAX_LAG``)."""
        self._settle_lock = threading.Lock()
        self._quiet_steps = 0
        """Background fold steps since the last group commit (``fold_pacing.fold_step``)."""
        self.committer = GroupCommitter(
            self.write_batches,
            background=self._fold_some if self.deferred else None,
            background_after_s=fold_pacing.FOLD_IDLE_S,
            pressing=self._lagging,
            parallel=PG_PARALLEL_COMMITS if db.dialect == "postgresql" else 1,
        )
        self.after_commit: Callable[[Iterable[tuple[str, str]]], None] | None = None
        """Told, after each commit that folded usage, the (meter id, subject) pairs it folded
        (the notification evaluator; must be cheap: it runs on the folding thread)."""

    # ------------------------------------------------------------ ingest

    def ingest(self, events: Sequence[CloudEvent]) -> int:
        """Store a validated batch exactly once and fold the new events into the rollups, on
        the caller's thread (on SQLite the fold is a second transaction: :meth:`settle`).
        Returns the number of events stored."""
        if not events:
            return 0
        stored = self.write_batches([[prepare(e) for e in events]])[0]
        self.settle()
        return stored

    def submit(self, events: Sequence[PreparedEvent]) -> Future[int]:
        """Queue a validated batch for the process's group commit; the future resolves to the
        number of events stored once they are durable (see :class:`GroupCommitter`)."""
        return self.committer.submit(events)

    def close(self, *, settle: bool = True) -> None:
        """Let the writer finish what is queued, then fold the tail, so a clean stop
        leaves nothing for the next start to fold. ``settle=False`` leaves the tail to
        another process (an import worker: its parent folds once every worker has stopped,
        instead of one worker's fold holding SQLite's write lock while the others append)."""
        self.committer.close()
        if self.deferred and settle:
            try:
                self.settle()
            except Exception:  # the events are durable; the next start or read folds them
                log.exception("folding the tail at close failed")

    # ------------------------------------------------------------ the deferred fold

    def tail_check(self) -> str | None:
        """The statement :meth:`settle` checks with (one column: the tail's end, 0 when
        nothing waits to be folded), for a reader that joins it to its own read; ``None``
        when nothing is ever deferred (no check needed)."""
        return usage_tail.tail_end_statement(self._db.dialect) if self.deferred else None

    def settle(self, *, allow_io: bool = True) -> bool:
        """Make every event stored so far (by any process) count in the rollups and usage
        marks: fold the tail up to the largest ``seq`` stored now, on the caller's thread.
        What every usage read calls first (read-your-writes). Without ``allow_io`` it only
        checks and returns False when there is a tail to fold."""
        if not self.deferred:
            return True
        end = usage_tail.tail_end(self._db)
        if not end:
            return True
        if not allow_io:
            return False
        with self._settle_lock:
            self._settling += 1
        try:
            while True:  # PostgreSQL: waits for events another fold is folding (FOR UPDATE)
                with self._db.write() as tx:
                    n, touched = usage_tail.fold_pending(tx, usage_tail.FOLD_CHUNK, upto=end)
                    more = n == usage_tail.FOLD_CHUNK or usage_tail.waiting(tx, end)
                self._folded(n, touched)
                if not more:
                    return True
        finally:
            with self._settle_lock:
                self._settling -= 1

    def _fold_some(self) -> bool:
        """The writer's background step: fold one chunk (``fold_pacing.fold_step``); True
        when more may be left. A failure raises: the writer tries again after a pause."""
        chunk = fold_pacing.fold_step(self._unfolded, self._quiet_steps, self.fold_max_lag)
        with self._db.write() as tx:
            n, touched = usage_tail.fold_pending(tx, chunk, skip_locked=True)
        self._quiet_steps += 1
        self._folded(n, touched)
        return n == chunk

    def _lagging(self) -> bool:
        return self._unfolded > self.fold_max_lag or self._settling > 0

    def _folded(self, n: int, touched: usage_tail.Touched) -> None:
        with self._settle_lock:
            self._unfolded = max(0, self._unfolded - n)
        if touched and self.after_commit is not None:
            try:
                self.after_commit(touched.keys())
            except Exception:  # the fold is committed; never fail the caller
                log.exception("after-commit listener failed")

    def prefold(self, events: Sequence[PreparedEvent]) -> Sequence[PreparedEvent]:
        """The batch, with its rollup rows folded here (on the caller's thread) when it is
        large enough to be worth it (:data:`PREFOLD_MIN_EVENTS`); see :class:`PrefoldedBatch`.
        Deferred fold: on SQLite the batch as it is; on PostgreSQL sorted by id (stable, so
        repeats keep their order), which makes the writer's sort of the group a merge of runs
        (:func:`_sort_by_key`)."""
        if self.deferred:
            if self._db.dialect == "postgresql" and len(events) > 1:
                return sorted(events, key=_by_id)
            return events
        if len(events) < PREFOLD_MIN_EVENTS:
            return events
        seen: set[tuple[str, str]] = set()
        rows: list[PreparedEvent] = []
        for ev in events:
            key = (ev[0], ev[1])
            if key not in seen:
                seen.add(key)
                rows.append(ev)
        _sort_by_key(rows)  # the writer's insertion order (LATEST ties)
        types = frozenset(r[2] for r in rows)
        with self._db.read() as tx:
            meters = sorted(meters_repo.live_by_event_types(tx, types), key=_meter_id)
        folded = (
            usage_write.fold_events(
                usage_write.targets((m.id, m) for m in meters),
                ((r[2], r[3], r[4], r[6], r[0], r[1]) for r in rows),
            )
            if meters
            else None
        )
        return PrefoldedBatch(events, distinct=len(rows), types=types, meters=meters, folded=folded)

    def write_batches(self, batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        """Store several validated batches exactly once, in ONE transaction, and fold the new
        events into the rollups; return how many events of each batch were stored.

        When this returns, the events are durable and counted (on SQLite their fold into the
        rollups may still be pending: readers :meth:`settle` first). An event whose ``(source, id)``
        is already stored (earlier, by an earlier batch of this call or earlier in its own
        batch, or concurrently by another process) is skipped and never counted twice: the
        first one wins, whatever its time or payload.
        """
        self._quiet_steps = 0
        if self.deferred and self._db.dialect == "sqlite":
            return self._append_sqlite(batches)
        owner: dict[tuple[str, str], int] = {}
        rows: list[PreparedEvent] = []
        for index, batch in enumerate(batches):
            for ev in batch:
                key = (ev[0], ev[1])
                if key not in owner:
                    owner[key] = index
                    rows.append(ev)
        counts = [0] * len(batches)
        if not rows:
            return counts
        # one (source, id) order for every writer: concurrent PostgreSQL transactions then take
        # the unique-index locks in the same order and cannot deadlock
        _sort_by_key(rows)
        db = self._db
        now_us = to_micros(self._clock.now())
        touched: Iterable[tuple[str, str]] = ()
        if self.deferred and len(rows) < events_repo.COPY_MIN_ROWS:  # one round trip
            self._count(counts, owner, rows, events_repo.append_few(db, rows, now_us))
            return counts
        with db.write() as tx:
            meters_repo.lock_for_ingest(tx, db.dialect)
            inserted = events_repo.insert_new(tx, db.dialect, rows, now_us)
            fresh = self._count(counts, owner, rows, inserted)
            if fresh and not self.deferred:
                meters = sorted(
                    meters_repo.live_by_event_types(tx, {r[2] for r in fresh}), key=_meter_id
                )
                if meters:
                    touched = self._fold_fresh(tx, batches, counts, owner, fresh, meters)
        if touched and self.after_commit is not None:
            try:
                self.after_commit(touched)
            except Exception:  # the events are committed; never fail the request
                log.exception("after-commit listener failed")
        return counts

    def _count(
        self,
        counts: list[int],
        owner: dict[tuple[str, str], int],
        rows: list[PreparedEvent],
        inserted: set[tuple[str, str]] | None,
    ) -> list[PreparedEvent]:
        """Each request's count of the rows stored (``inserted``: None = all); the rows."""
        fresh = rows if inserted is None else [r for r in rows if (r[0], r[1]) in inserted]
        if len(counts) == 1:
            counts[0] = len(fresh)
        else:
            for r in fresh:
                counts[owner[(r[0], r[1])]] += 1
        if self.deferred:
            with self._settle_lock:  # PostgreSQL's two writers; readers count down
                self._unfolded += len(fresh)
        return fresh

    def _append_sqlite(self, batches: Sequence[Sequence[PreparedEvent]]) -> list[int]:
        """:meth:`write_batches` on SQLite (deferred fold): the rows as they come, in
        statements of 100 rows (``events_repo.insert_new``), with no per-event Python
        bookkeeping unless some row was a repeat.

        SQLite has one writer at a time, so the rows go in in group order: the unique index
        keeps the first of a same-time repeat, the fold the smallest ``seq`` of a repeat with
        another time (``usage_tail``), so the first one wins as on PostgreSQL. Only when
        some row was not inserted are the stored keys read back and each given to the first
        request that sent it (the counts)."""
        rows = [ev for batch in batches for ev in batch]
        if not rows:
            return [0] * len(batches)
        with self._db.write() as tx:
            inserted = events_repo.insert_new(tx, "sqlite", rows, to_micros(self._clock.now()))
        if inserted is None:
            self._unfolded += len(rows)
            return [len(batch) for batch in batches]
        counts = [0] * len(batches)
        for index, batch in enumerate(batches):
            for ev in batch:
                key = (ev[0], ev[1])
                if key in inserted:
                    inserted.discard(key)
                    counts[index] += 1
        self._unfolded += sum(counts)
        return counts

    @staticmethod
    def _fold_fresh(
        tx: Tx,
        batches: Sequence[Sequence[PreparedEvent]],
        counts: list[int],
        owner: dict[tuple[str, str], int],
        fresh: list[PreparedEvent],
        meters: list[Meter],
    ) -> Iterable[tuple[str, str]]:
        """Fold the newly inserted events into the rollups: a batch's prefold when it is still
        exact (all its events new, same meters), the writer's own fold for the rest. Returns
        the (meter id, subject) pairs touched."""
        parts: list[usage_write.Folded] = []
        own: set[int] = set()
        for index, batch in enumerate(batches):
            if not counts[index]:
                continue
            if (
                isinstance(batch, PrefoldedBatch)
                and counts[index] == batch.distinct
                and batch.meters == [m for m in meters if m.event_type in batch.types]
            ):
                if batch.folded is not None:
                    parts.append(batch.folded)
            else:
                own.add(index)
        if own:
            by_type = usage_write.targets((m.id, m) for m in meters)
            rest = (
                fresh
                if len(own) == len(batches)
                else [r for r in fresh if owner[(r[0], r[1])] in own]
            )
            parts.append(
                usage_write.fold_events(
                    by_type, ((r[2], r[3], r[4], r[6], r[0], r[1]) for r in rest)
                )
            )
        if not parts:
            return ()
        combined = usage_write.Folded.combine(parts)
        usage_write.write_folded(tx, combined)
        return combined.touched.keys()

    # ------------------------------------------------------------ list

    def list(self, q: EventQuery) -> list[dict[str, Any]]:
        """Stored events, newest first, with ``validationError`` against the current meters.
        Folds the tail first: a duplicate that carried another time is only removed there."""
        self.settle()
        now = self._clock.now()
        oldest = now - timedelta(days=limits.EVENTS_LIST_WINDOW_DAYS)
        start = q.from_ if q.from_ is not None else oldest
        if start < oldest:
            raise InvalidInput(
                f"query parameter from: must not be more than {limits.EVENTS_LIST_WINDOW_DAYS} "
                f"days ago (earliest allowed: {format_rfc3339(oldest)})",
                field="from",
            )
        if q.to is not None and q.to < start:
            raise InvalidInput("query parameter to: must not be before from", field="to")
        if (
            q.ingested_at_from is not None
            and q.ingested_at_to is not None
            and q.ingested_at_to < q.ingested_at_from
        ):
            raise InvalidInput(
                "query parameter ingestedAtTo: must not be before ingestedAtFrom",
                field="ingestedAtTo",
            )
        if not 1 <= q.limit <= limits.EVENTS_LIST_LIMIT_MAX:
            raise InvalidInput(
                f"query parameter limit: must be between 1 and {limits.EVENTS_LIST_LIMIT_MAX}",
                field="limit",
            )
        f = events_repo.EventFilter(
            from_us=to_micros(start),
            to_us=to_micros(q.to) if q.to is not None else None,
            ingested_from_us=to_micros(q.ingested_at_from) if q.ingested_at_from else None,
            ingested_to_us=to_micros(q.ingested_at_to) if q.ingested_at_to else None,
            id_contains=q.id,
            subject=q.subject,
        )
        out: list[dict[str, Any]] = []
        meters_of: dict[str, list[Meter]] = {}
        before: tuple[int, int] | None = None
        page = q.limit if q.has_error is None else max(q.limit, 500)
        with self._db.read() as tx:
            while len(out) < q.limit:
                rows = events_repo.list_page(tx, f, page, before)
                for row in rows:
                    if row.type not in meters_of:
                        meters_of[row.type] = meters_repo.live_by_event_types(tx, [row.type])
                    item = _listed(row, meters_of[row.type])
                    if q.has_error is not None and ("validationError" in item) != q.has_error:
                        continue
                    out.append(item)
                    if len(out) == q.limit:
                        break
                if len(rows) < page:
                    break
                before = (rows[-1].time_us, rows[-1].seq)
        return out


def _meter_id(m: Meter) -> str:
    return m.id


def validation_error(event_type: str, data: Any, meters: Sequence[Meter]) -> str | None:
    """OpenMeter's read-time check of a stored event against the meters of its type."""
    if not meters:
        return f"no meter found for event type: {event_type}"
    errors = []
    for meter in sorted(meters, key=lambda m: m.slug):
        result = extract(meter, data)
        if isinstance(result, str):
            errors.append(result)
    return "\n".join(errors) if errors else None


def _listed(row: events_repo.ListedEvent, meters: Sequence[Meter]) -> dict[str, Any]:
    event = _decoder.decode(row.event_json)
    item: dict[str, Any] = {"event": event}
    error = validation_error(row.type, event.get("data"), meters)
    if error is not None:
        item["validationError"] = error
    ingested = format_rfc3339(from_micros(row.ingested_at_us))
    item["ingestedAt"] = ingested
    item["storedAt"] = ingested
    return item
