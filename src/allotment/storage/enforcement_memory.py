"""SQLite: the decision state of the (customer, feature) keys in memory — the rate-limit logs
and the held reservation items — so that a decision reads no statement for them.

Why it is exact: one server process serves an SQLite database (``serve --workers`` needs
PostgreSQL), and every writer of this state runs in it under the keys it touches
(:class:`~allotment.storage.enforcement_repo.EnforcementStore`'s in-process locks). A key's
entry is

* **loaded** from the database the first time a decision holding the key asks for it (or
  after it was forgotten): no write of the key can be in flight then, since its holder's
  writes commit before the key is given back;
* **updated** with a decision's writes only once they have **committed** (the group
  writer's completion, before the keys are given back; a write that failed leaves the entry
  as the database has it);
* **forgotten** when a settlement (commit, release) writes the key's rows in a transaction
  of its own: the next decision loads it again.

The expiry sweep changes no answer (a hold past its expiry stops counting by itself, here as
in :func:`~allotment.storage.reservations_repo.held_amount`), so it forgets nothing. After a
restart the entries are loaded from what was committed. Idempotency records are not kept here
(a request with a key reads its record: one point read). :class:`MemoryReads` is what a
decision reads through (the enforcement store's sessions and inline decisions).

Memory: per (customer, rate-limit feature) the log (at most ``limit`` pairs, one per distinct
microsecond in the window: about 120 bytes a pair), per (customer, budget feature) one
``(expires µs, amount)`` pair per held, unexpired item (about 150 bytes each); at most
:data:`MAX_KEYS` keys, all dropped when full (then loaded again as used).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from allotment.domain.rate_limits import Entry
from allotment.storage import usage_marks
from allotment.storage.database import Database, dec
from allotment.storage.enforcement_state import decode_log
from allotment.storage.reservations_repo import ReservationRecord

_T = TypeVar("_T")

MAX_KEYS = 200_000
"""Most (customer, feature) entries kept; when full, all are dropped (and loaded again)."""


@dataclass(slots=True)
class _Log:
    window_us: int
    entries: tuple[Entry, ...]


@dataclass(slots=True)
class _Holds:
    """The held items of one (customer, budget): ``(expires µs, amount)`` as a heap, and
    their sum."""

    items: list[tuple[int, Decimal]] = field(default_factory=list)
    total: Decimal = Decimal(0)

    def at(self, now_us: int) -> Decimal:
        """What the unexpired items hold at ``now_us`` (those past it are dropped)."""
        items = self.items
        while items and items[0][0] <= now_us:
            self.total -= heapq.heappop(items)[1]
        if not items:
            self.total = Decimal(0)
        return self.total


_LOAD_LOG = (
    "SELECT window_us, entries FROM rate_limit_logs WHERE customer_id = ? AND feature_key = ?"
)
IDEMPOTENCY_RECORD = (
    "SELECT request_hash, outcome FROM idempotency_records"
    " WHERE customer_id = ? AND idem_key = ? AND expires_at > ?"
)
"""An unexpired idempotency record's ``(request_hash, outcome)`` (not kept in memory)."""
_LOAD_HOLDS = (
    "SELECT expires_at, amount FROM reservation_items WHERE customer_id = ? AND feature_key = ?"
    " AND held = 1 AND expires_at > ?"
)


class DecisionMemory:
    """The kept state; every method is called by a holder of the keys it names (the
    enforcement store's locks), from any thread."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._logs: dict[tuple[str, str], _Log | None] = {}
        self._holds: dict[tuple[str, str], _Holds] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """Entries loaded from the database (for tests and diagnostics)."""

    def rate_log(self, customer_id: str, feature_key: str, window_us: int) -> tuple[Entry, ...]:
        key = (customer_id, feature_key)
        try:
            log = self._logs[key]
        except KeyError:
            row = usage_marks.read_rows(self._db, _LOAD_LOG, key)
            log = _Log(int(row[0][0]), decode_log(str(row[0][1]))) if row else None
            self._keep(self._logs, key, log)
        if log is None or log.window_us != window_us:
            return ()
        return log.entries

    def held_amount(self, customer_id: str, feature_key: str, now_us: int) -> Decimal:
        key = (customer_id, feature_key)
        holds = self._holds.get(key)
        if holds is None:
            rows = usage_marks.read_rows(self._db, _LOAD_HOLDS, (*key, now_us))
            holds = _Holds([(int(at), dec(amount)) for at, amount in rows])
            heapq.heapify(holds.items)
            holds.total = sum((a for _, a in holds.items), Decimal(0))
            self._keep(self._holds, key, holds)
        return holds.at(now_us)

    def _keep(self, table: dict[tuple[str, str], _T], key: tuple[str, str], value: _T) -> None:
        with self._lock:
            self.loads += 1
            if len(self._logs) + len(self._holds) >= MAX_KEYS:
                self._logs.clear()
                self._holds.clear()
            table[key] = value

    def committed(
        self,
        logs: Iterable[tuple[str, str, int, Sequence[Entry], int]],
        reservation: ReservationRecord | None,
    ) -> None:
        """A decision's writes have committed: its new logs ``(customer, feature, window µs,
        entries, now µs)`` and its reservation's held items. A budget whose entry is not
        loaded is left to load (it will read these rows)."""
        for customer_id, feature_key, window_us, entries, _now in logs:
            self._logs[customer_id, feature_key] = _Log(window_us, tuple(entries))
        if reservation is None:
            return
        for item in reservation.items:
            kept = self._holds.get((reservation.customer_id, item.feature_key))
            if kept is not None and item.held:
                heapq.heappush(kept.items, (item.expires_at_us, item.amount))
                kept.total += item.amount

    def forget(self, keys: Iterable[tuple[str, str]]) -> None:
        """These (customer, feature) entries were written outside a decision (settlement)."""
        with self._lock:
            for key in keys:
                self._logs.pop(key, None)
                self._holds.pop(key, None)


class MemoryReads:
    """SQLite: :class:`~allotment.storage.enforcement_state.StateReads` from the kept state
    (:class:`DecisionMemory`): no statement for the logs and holds; an idempotency record is
    one point read without a transaction (:data:`IDEMPOTENCY_RECORD`)."""

    __slots__ = ("_db", "_memory")

    def __init__(self, db: Database, memory: DecisionMemory) -> None:
        self._db = db
        self._memory = memory

    def __enter__(self) -> MemoryReads:
        """Its own context (it holds nothing to release): one per store serves every
        decision."""
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def rate_log(self, customer_id: str, feature_key: str, window_us: int) -> tuple[Entry, ...]:
        return self._memory.rate_log(customer_id, feature_key, window_us)

    def held_amount(self, customer_id: str, feature_key: str, now_us: int) -> Decimal:
        return self._memory.held_amount(customer_id, feature_key, now_us)

    def idempotency_record(self, customer_id: str, key: str, now_us: int) -> tuple[str, str] | None:
        rows = usage_marks.read_rows(self._db, IDEMPOTENCY_RECORD, (customer_id, key, now_us))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None


def memory_keys(keys: Sequence[str]) -> list[tuple[str, str]]:
    """The (customer, feature) pairs of a session's lock keys (``customer\x1ffeature``, as
    the enforcement service builds them; an idempotency key's parts name no entry)."""
    pairs = [k.split("\x1f") for k in keys]
    return [(p[0], p[1]) for p in pairs if len(p) == 2]
