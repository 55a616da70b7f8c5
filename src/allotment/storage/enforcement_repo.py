"""Enforcement state: rate-limit logs, reservations, idempotency records, and the locks that
make one customer's decisions exact across replicas.

Exactness: every authorize and settlement runs inside :meth:`EnforcementStore.session` over
the (customer, feature) keys it touches. On PostgreSQL the session is one transaction that
first takes a transaction-scoped advisory lock per key (all keys, the idempotency key's too,
in one order: :func:`~allotment.storage.key_locks.advisory_pairs`, so two sessions never
wait on each other crosswise); reads made on other connections while it is open (the
budget's balance) see everything committed by the sessions before it, and its writes commit
when it ends. On SQLite (one server process) the keys are in-process locks and every write
is one ``BEGIN IMMEDIATE`` transaction. (The ``enforcement_locks`` table of the first
version is no longer written: replicas of that version and of this one must not serve one
database at once.)

The rate-limit logs, reservations and idempotency records are only ever read and written
inside one :class:`Session`, under its locks, and one decision writes all three at once
(:func:`write_decisions`, or on PostgreSQL the one statement of :func:`decision_statement`,
built from the same inserts); the locking rule above is stated and enforced here. The
reservation records' SQL is :mod:`allotment.storage.reservations_repo` (re-exported here).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from allotment.domain.errors import DomainError
from allotment.domain.rate_limits import Entry
from allotment.storage import usage_marks
from allotment.storage.database import Database, PipelinedTx, Row, Tx
from allotment.storage.decision_checks import Check, checked, row_is
from allotment.storage.enforcement_memory import (
    IDEMPOTENCY_RECORD,
    DecisionMemory,
    MemoryReads,
    memory_keys,
)
from allotment.storage.enforcement_state import (
    DecisionState,
    StateQuery,
    StateReads,
    decision_state,
    decode_log,
    encode_log,
    read_state,
    send_state,
    send_state_with,
)
from allotment.storage.key_locks import ADVISORY_LOCKS, StripedLocks, advisory_pairs
from allotment.storage.reservations_repo import (
    ADD_HELD as ADD_HELD,
)
from allotment.storage.reservations_repo import (
    INSERT_ITEM as INSERT_ITEM,
)
from allotment.storage.reservations_repo import (
    INSERT_RESERVATION as INSERT_RESERVATION,
)
from allotment.storage.reservations_repo import (
    ItemRecord as ItemRecord,
)
from allotment.storage.reservations_repo import (
    ReservationRecord as ReservationRecord,
)
from allotment.storage.reservations_repo import (
    held_amount as held_amount,
)
from allotment.storage.reservations_repo import (
    held_by_feature as held_by_feature,
)
from allotment.storage.reservations_repo import (
    hold_rows as hold_rows,
)
from allotment.storage.reservations_repo import (
    insert_reservation as insert_reservation,
)
from allotment.storage.reservations_repo import (
    insert_reservations as insert_reservations,
)
from allotment.storage.reservations_repo import (
    item_rows as item_rows,
)
from allotment.storage.reservations_repo import (
    reservation as reservation,
)
from allotment.storage.reservations_repo import (
    reservation_row as reservation_row,
)
from allotment.storage.reservations_repo import (
    settle as settle,
)
from allotment.storage.reservations_repo import (
    sweep_expired as sweep_expired,
)
from allotment.storage.tx_batcher import TxBatcher

SWEEP_BATCH = 200
"""Most expired reservations (and idempotency records) one sweep settles (drops)."""

GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"
"""PostgreSQL: the first statement of a session's transaction (reverted by its ``COMMIT``).
The session's statements are prepared, but by default PostgreSQL plans a prepared statement
afresh for its parameters (a custom plan) for as long as it finds the generic plan no
cheaper, and for the decision's state read it always did: planning was about half of the
backend's CPU per authorize (docs/api/enforcement.md, "Cost"). Every statement of a session
reads or writes a few rows by primary key, so the generic plan is the same plan."""


@dataclass(slots=True)
class DecisionWrites:
    """What one authorize decision writes (decided under its keys, written later, maybe in a
    group with other decisions: see :func:`write_decisions`)."""

    rate_logs: list[tuple[str, str, int, Sequence[Entry], int]] = field(default_factory=list)
    """(customer id, feature, window µs, entries, now µs) per consumed rate limit."""
    reservation: ReservationRecord | None = None
    idempotency: tuple[str, str, str, str, int, int] | None = None
    """(customer id, key, request hash, outcome, now µs, expires µs)."""
    sweep_at_us: int | None = None
    """Also sweep expired reservations and idempotency records as of this instant."""
    check: Check | None = None
    """SQLite's group writer: a read and the row it must return inside the write
    transaction, else none of the decision is written (:mod:`allotment.storage.decision_checks`).
    Not a write: ``bool()`` ignores it."""

    def __bool__(self) -> bool:
        return bool(self.rate_logs) or self.reservation is not None or self.idempotency is not None


def write_decisions(tx: Tx, batch: Sequence[DecisionWrites]) -> None:
    """The writes of decisions on distinct keys, one ``executemany`` per table for all."""
    logs = [
        (cid, f, w, encode_log(entries), now)
        for d in batch
        for cid, f, w, entries, now in d.rate_logs
    ]
    if logs:
        tx.execute_many(_PUT_RATE_LOG, logs)
    reservations = [d.reservation for d in batch if d.reservation is not None]
    if reservations:
        insert_reservations(tx, reservations)
    records = [d.idempotency for d in batch if d.idempotency is not None]
    if records:
        tx.execute_many(_PUT_IDEMPOTENCY, records)
    sweeps = [d.sweep_at_us for d in batch if d.sweep_at_us is not None]
    if sweeps:
        sweep_expired(tx, max(sweeps), SWEEP_BATCH)


def decision_statement(d: DecisionWrites) -> tuple[str, list[object]]:
    """PostgreSQL: one decision's writes (not its sweep) as **one** statement — each table's
    insert a data-modifying ``WITH`` part, all run once, to completion, in the statement —
    instead of an ``executemany`` per table (a quarter of the client's work for the same
    rows). Its rows are those :func:`write_decisions` writes for ``[d]``."""
    parts: list[tuple[int, list[tuple[object, ...]]]] = []
    if d.rate_logs:
        logs: list[tuple[object, ...]] = [
            (c, f, w, encode_log(e), now) for c, f, w, e, now in d.rate_logs
        ]
        parts.append((0, logs))
    if d.reservation is not None:
        r = d.reservation
        parts.append((1, [reservation_row(r)]))
        parts.append((2, item_rows(r)))
        parts.append((3, list(hold_rows(r))))
    if d.idempotency is not None:
        parts.append((4, [d.idempotency]))
    params = [v for _, rows in parts for row in rows for v in row]
    return _decision_sql(tuple((part, len(rows)) for part, rows in parts)), params


@functools.lru_cache(maxsize=256)
def _decision_sql(shape: tuple[tuple[int, int], ...]) -> str:
    """:func:`decision_statement`'s text for its parts (which insert, how many rows): built
    once per shape (a workload has a few)."""
    inserts = (
        (_PUT_RATE_LOG, "(?, ?, ?, ?, ?)"),
        (INSERT_RESERVATION, "(?, ?, ?, ?, ?, ?)"),
        (INSERT_ITEM, "(?, ?, ?, ?, ?, 1, ?, ?)"),
        (ADD_HELD, "(?, ?, ?)"),
        (_PUT_IDEMPOTENCY, "(?, ?, ?, ?, ?, ?)"),
    )
    ctes = []
    for n, (part, count) in enumerate(shape):
        sql, marks = inserts[part]
        many = " VALUES " + ", ".join([marks] * count)
        ctes.append(f"w{n} AS ({sql.replace(' VALUES ' + marks, many, 1)})")
    return "WITH " + ", ".join(ctes) + " SELECT 1"


class TxReads:
    """:class:`~allotment.storage.enforcement_state.StateReads` one statement at a time, in
    ``tx`` (SQLite's sessions; a PostgreSQL session that read no state with its locks)."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    def rate_log(self, customer_id: str, feature_key: str, window_us: int) -> tuple[Entry, ...]:
        return rate_log(self._tx, customer_id, feature_key, window_us)

    def held_amount(self, customer_id: str, feature_key: str, now_us: int) -> Decimal:
        return held_amount(self._tx, customer_id, feature_key, now_us)

    def idempotency_record(self, customer_id: str, key: str, now_us: int) -> tuple[str, str] | None:
        return idempotency_record(self._tx, customer_id, key, now_us)


class Session:
    """What an enforcement decision may do while it holds its keys."""

    def __init__(
        self,
        db: Database,
        tx: Tx | None,
        batcher: TxBatcher[DecisionWrites] | None = None,
        state: DecisionState | None = None,
        memory: DecisionMemory | None = None,
        keys: Sequence[str] = (),
    ) -> None:
        self._db = db
        self._tx = tx
        self._batcher = batcher
        self._state = state
        self._memory = memory
        self._keys = keys
        self.sweep_at_us: int | None = None
        """PostgreSQL: a sweep the session's decision asked for, run after it ends."""
        self.wrote = False
        """PostgreSQL: whether anything was written in the session's transaction."""
        self.ahead: Row | None = None
        """The first row of the session's read ahead (``None``: none asked, or no row)."""

    @contextmanager
    def read(self, query: StateQuery) -> Iterator[StateReads]:
        """Where the decision reads the state ``query`` names: on PostgreSQL what the session
        read with its locks (the :class:`StateQuery` it was opened with), or its locked
        transaction; on SQLite the kept state (:class:`MemoryReads`; the keys' in-process
        locks keep every other writer of this state out until the decision's writes have
        committed)."""
        if self._state is not None:
            yield self._state
            return
        if self._tx is not None:
            yield TxReads(self._tx)
            return
        if self._memory is not None:
            yield MemoryReads(self._db, self._memory)
            return
        yield read_state(self._db, query)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """The session's own writes (settlements): on PostgreSQL its locked transaction
        (committed when the session ends), on SQLite a write transaction of its own, after
        which the kept state of the session's keys is forgotten (loaded again when used)."""
        if self._tx is not None:
            self.wrote = True
            yield self._tx
            return
        try:
            with self._db.write() as tx:
                yield tx
        finally:
            if self._memory is not None:
                self._memory.forget(memory_keys(self._keys))

    def apply(self, writes: DecisionWrites) -> None:
        """Write one decision: on PostgreSQL in the session's transaction, as one statement
        (:func:`decision_statement`, queued: it travels with the ``COMMIT``); on SQLite in
        the process's next group transaction (:mod:`allotment.storage.tx_batcher`: one
        fsync for many concurrent decisions), returning once that has committed."""
        if self._tx is not None:
            self.wrote = True
            self.sweep_at_us, writes.sweep_at_us = writes.sweep_at_us, None
            if isinstance(self._tx, PipelinedTx) and self._tx.dialect == "postgresql":
                self._tx.send(*decision_statement(writes))  # its errors: with the COMMIT
            else:
                write_decisions(self._tx, [writes])
        elif self._batcher is None:
            with self._db.write() as tx:
                write_decisions(tx, [writes])
        else:
            self._batcher.run(writes)
            if self._memory is not None:
                self._memory.committed(writes.rate_logs, writes.reservation)


class EnforcementStore:
    def __init__(self, db: Database, *, max_sessions: int = 4) -> None:
        """``max_sessions``: PostgreSQL sessions open at once in this process. A session
        holds a pooled connection while a reservation reads the budget on another one; keep
        it below the pool size (the container passes half of it) so they never starve."""
        self.db = db
        self._local_locks = StripedLocks()
        self._sessions = threading.BoundedSemaphore(max(1, max_sessions))
        self._batcher = (
            None
            if db.dialect == "postgresql"
            else TxBatcher(db, checked(write_decisions), name="allotment-authorize")
        )
        self.memory = None if db.dialect == "postgresql" else DecisionMemory(db)
        """SQLite: the decisions' kept state (:mod:`allotment.storage.enforcement_memory`)."""
        self._memory_reads = None if self.memory is None else MemoryReads(db, self.memory)

    @property
    def inline(self) -> bool:
        """Whether a decision may run on the event loop (:meth:`try_hold`, :meth:`submit`):
        SQLite, whose reads are local and whose writes go to the group writer."""
        return self._batcher is not None

    @property
    def reads_with_locks(self) -> bool:
        """Whether :meth:`session` reads a decision's state in the round trip that takes its
        keys (PostgreSQL): the decision's instant is then read before the keys are taken."""
        return self.db.dialect == "postgresql"

    def reads(self, query: StateQuery) -> AbstractContextManager[StateReads]:
        """A decision's reads outside a session (SQLite's inline decisions): the state
        ``query`` names, from the kept state (:class:`MemoryReads`, one for every decision;
        the keys the decision holds keep every writer of it out)."""
        if self._memory_reads is None:
            return nullcontext(read_state(self.db, query))
        return self._memory_reads

    def try_hold(self, keys: Sequence[str], token: object) -> tuple[list[int] | None, object]:
        """SQLite: hold ``keys`` without waiting (see :meth:`StripedLocks.try_take`); what
        is returned is released by :meth:`give_back`."""
        return self._local_locks.try_take(keys, token)

    def give_back(self, held: Sequence[int], token: object) -> None:
        self._local_locks.give_back(held, token)

    def submit(self, writes: DecisionWrites, done: Callable[[BaseException | None], None]) -> None:
        """SQLite: queue one decision's writes for the next group transaction; ``done`` runs
        in the writer's thread once they have committed (or failed), the kept state updated
        before it when they have committed."""
        assert self._batcher is not None
        assert self.memory is not None
        memory = self.memory

        def written(exc: BaseException | None) -> None:
            if exc is None:
                memory.committed(writes.rate_logs, writes.reservation)
            done(exc)

        self._batcher.submit(writes, written)

    def holds(self, check: Check) -> bool:
        """Whether a :attr:`DecisionWrites.check` returns its row now (one statement on this
        thread's connection): for a decision that writes nothing."""
        return row_is(usage_marks.read_one(self.db, check[0], check[1]), check)

    def close(self) -> None:
        """Stop the SQLite group writer after what is queued."""
        if self._batcher is not None:
            self._batcher.close()

    @contextmanager
    def session(
        self,
        keys: Sequence[str],
        *,
        once: str | None = None,
        state: StateQuery | None = None,
        ahead: tuple[str, Sequence[Any]] | None = None,
    ) -> Iterator[Session]:
        """Hold ``keys`` (a customer's features) and ``once`` (an idempotency key) until the
        session ends. PostgreSQL: one pipelined transaction whose first round trip carries
        ``BEGIN``, a transaction-scoped advisory lock per key (taken in one statement, in the
        order of :func:`~allotment.storage.key_locks.advisory_pairs`; they leave no rows
        behind and are released by the ``COMMIT``) and, when ``state`` names it, the one
        statement reading the decision's state (:mod:`allotment.storage.enforcement_state`:
        a separate statement after the locks, so its snapshot is taken once they are held);
        the decision's writes and the ``COMMIT`` are the second. SQLite: in-process locks;
        ``state`` is read when the decision asks (:meth:`Session.read`). ``ahead``: one more
        read statement (PostgreSQL: sent after the locks and the state, in the same round
        trip, so that its snapshot too is taken once they are held; SQLite: run once the
        locks are held), its first row in :attr:`Session.ahead`."""
        if not keys and once is None:
            yield Session(self.db, None)
            return
        if self.db.dialect != "postgresql":
            with self._local_locks.held([*keys, *([once] if once else [])]):
                session = Session(self.db, None, self._batcher, memory=self.memory, keys=keys)
                if ahead is not None:
                    session.ahead = usage_marks.read_one(self.db, *ahead)
                yield session
            return
        first, second = advisory_pairs([*keys, *([once] if once else [])])
        denied: DomainError | None = None
        with self._sessions:
            with self.db.pipelined_write() as tx:
                tx.send(GENERIC_PLANS)
                tx.send(ADVISORY_LOCKS, [first, second])
                if state is not None and ahead is not None:
                    both = send_state_with(tx, state, ahead)  # one statement for both
                    tx.sync()  # BEGIN, the locks, the state and the read ahead: one round trip
                    read_both, row = both()
                    session = Session(self.db, tx, state=read_both)
                    session.ahead = row
                else:
                    sent = None if state is None else send_state(tx, state)
                    extra = None if ahead is None else tx.send(*ahead)
                    tx.sync()  # BEGIN, the locks, the state (or the read ahead): one round trip
                    read = None if state is None else decision_state(state, sent)
                    session = Session(self.db, tx, state=read)
                    if extra is not None:
                        session.ahead = next(iter(extra.rows()), None)
                try:
                    yield session
                except DomainError as exc:
                    if session.wrote:
                        raise
                    # a denial that wrote nothing: the transaction commits nothing (and
                    # releases the keys) instead of a ROLLBACK, after which psycopg would
                    # forget every prepared statement of the connection
                    denied = exc
            if denied is not None:
                raise denied
            if session.sweep_at_us is not None:
                # after the keys are released: the sweep lowers other customers' hold
                # totals, which must never wait for (or be waited on by) a locked session
                with self.db.write() as sweep_tx:
                    sweep_expired(sweep_tx, session.sweep_at_us, SWEEP_BATCH)


# ---------------------------------------------------------------- rate-limit logs


def rate_log(tx: Tx, customer_id: str, feature_key: str, window_us: int) -> tuple[Entry, ...]:
    """The stored log; empty when none, or when it was kept for another window length (the
    plan changed the feature's window: its counts do not carry over)."""
    row = tx.one(
        "SELECT window_us, entries FROM rate_limit_logs WHERE customer_id = ? AND feature_key = ?",
        (customer_id, feature_key),
    )
    if row is None or int(row[0]) != window_us:
        return ()
    return decode_log(str(row[1]))


def put_rate_log(
    tx: Tx,
    customer_id: str,
    feature_key: str,
    window_us: int,
    entries: Sequence[Entry],
    now_us: int,
) -> None:
    tx.execute(_PUT_RATE_LOG, (customer_id, feature_key, window_us, encode_log(entries), now_us))


_PUT_RATE_LOG = (
    "INSERT INTO rate_limit_logs (customer_id, feature_key, window_us, entries, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id, feature_key) DO UPDATE SET"
    " window_us = excluded.window_us, entries = excluded.entries,"
    " updated_at = excluded.updated_at"
)


# ---------------------------------------------------------------- idempotency


def idempotency_record(tx: Tx, customer_id: str, key: str, now_us: int) -> tuple[str, str] | None:
    """``(request_hash, outcome)`` of the unexpired record, if any."""
    row = tx.one(IDEMPOTENCY_RECORD, (customer_id, key, now_us))
    return None if row is None else (str(row[0]), str(row[1]))


def put_idempotency_record(
    tx: Tx,
    customer_id: str,
    key: str,
    request_hash: str,
    outcome: str,
    now_us: int,
    expires_at_us: int,
) -> None:
    """Insert, or replace an expired record of the same key."""
    tx.execute(_PUT_IDEMPOTENCY, (customer_id, key, request_hash, outcome, now_us, expires_at_us))


_PUT_IDEMPOTENCY = (
    "INSERT INTO idempotency_records (customer_id, idem_key, request_hash, outcome,"
    " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (customer_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash,"
    " outcome = excluded.outcome, created_at = excluded.created_at,"
    " expires_at = excluded.expires_at"
)
