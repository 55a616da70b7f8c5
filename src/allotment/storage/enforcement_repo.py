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

About 500 lines on purpose: the rate-limit logs, reservations and idempotency records are
only ever read and written inside one :class:`Session`, under its locks, and one decision
writes all three at once (:func:`write_decisions`, or on PostgreSQL the one statement of
:func:`decision_statement`, built from the same inserts); kept together, the locking rule
above is stated and enforced in one place. The tables' SQL is short; the next part to move
out, if it grows, is the reservation records (``ReservationRecord`` to ``sweep_expired``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from allotment.domain.errors import DomainError
from allotment.domain.rate_limits import Entry
from allotment.storage.database import Database, PipelinedTx, Tx, dec, dec_or_none
from allotment.storage.enforcement_state import (
    DecisionState,
    StateQuery,
    StateReads,
    decision_state,
    decode_log,
    encode_log,
    read_state,
    send_state,
)
from allotment.storage.key_locks import ADVISORY_LOCKS, StripedLocks, advisory_pairs
from allotment.storage.tx_batcher import TxBatcher

SWEEP_BATCH = 200
"""Most expired reservations (and idempotency records) one sweep settles (drops)."""


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
    parts: list[tuple[str, str, list[tuple[object, ...]]]] = []
    if d.rate_logs:
        logs: list[tuple[object, ...]] = [
            (c, f, w, encode_log(e), now) for c, f, w, e, now in d.rate_logs
        ]
        parts.append((_PUT_RATE_LOG, "(?, ?, ?, ?, ?)", logs))
    if d.reservation is not None:
        r = d.reservation
        parts.append((_INSERT_RESERVATION, "(?, ?, ?, ?, ?, ?)", [_reservation_row(r)]))
        parts.append((_INSERT_ITEM, "(?, ?, ?, ?, ?, 1, ?, ?)", _item_rows(r)))
        parts.append((_ADD_HELD, "(?, ?, ?)", list(_hold_rows(r))))
    if d.idempotency is not None:
        parts.append((_PUT_IDEMPOTENCY, "(?, ?, ?, ?, ?, ?)", [d.idempotency]))
    ctes, params = [], []
    for n, (sql, marks, rows) in enumerate(parts):
        many = " VALUES " + ", ".join([marks] * len(rows))
        ctes.append(f"w{n} AS ({sql.replace(' VALUES ' + marks, many, 1)})")
        params += [v for row in rows for v in row]
    return "WITH " + ", ".join(ctes) + " SELECT 1", params


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
    ) -> None:
        self._db = db
        self._tx = tx
        self._batcher = batcher
        self._state = state
        self.sweep_at_us: int | None = None
        """PostgreSQL: a sweep the session's decision asked for, run after it ends."""
        self.wrote = False
        """PostgreSQL: whether anything was written in the session's transaction."""

    @contextmanager
    def read(self, query: StateQuery) -> Iterator[StateReads]:
        """Where the decision reads the state ``query`` names: on PostgreSQL what the session
        read with its locks (the :class:`StateQuery` it was opened with), or its locked
        transaction; on SQLite one statement (the keys' in-process locks keep every other
        writer of this state out until the decision's writes have committed)."""
        if self._state is not None:
            yield self._state
            return
        if self._tx is not None:
            yield TxReads(self._tx)
            return
        yield read_state(self._db, query)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """The session's own writes (settlements): on PostgreSQL its locked transaction
        (committed when the session ends), on SQLite a write transaction of its own."""
        if self._tx is not None:
            self.wrote = True
            yield self._tx
            return
        with self._db.write() as tx:
            yield tx

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
            else TxBatcher(db, write_decisions, name="allotment-authorize")
        )

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

    @contextmanager
    def reads(self, query: StateQuery) -> Iterator[StateReads]:
        """A decision's reads outside a session (SQLite's inline decisions): the state
        ``query`` names, in one statement without a transaction (one statement is its own
        snapshot; the keys the decision holds keep every writer of these rows out)."""
        yield read_state(self.db, query)

    def try_hold(self, keys: Sequence[str], token: object) -> tuple[list[int] | None, object]:
        """SQLite: hold ``keys`` without waiting (see :meth:`StripedLocks.try_take`); what
        is returned is released by :meth:`give_back`."""
        return self._local_locks.try_take(keys, token)

    def give_back(self, held: Sequence[int], token: object) -> None:
        self._local_locks.give_back(held, token)

    def submit(self, writes: DecisionWrites, done: Callable[[BaseException | None], None]) -> None:
        """SQLite: queue one decision's writes for the next group transaction; ``done`` runs
        in the writer's thread once they have committed (or failed)."""
        assert self._batcher is not None
        self._batcher.submit(writes, done)

    def close(self) -> None:
        """Stop the SQLite group writer after what is queued."""
        if self._batcher is not None:
            self._batcher.close()

    @contextmanager
    def session(
        self, keys: Sequence[str], *, once: str | None = None, state: StateQuery | None = None
    ) -> Iterator[Session]:
        """Hold ``keys`` (a customer's features) and ``once`` (an idempotency key) until the
        session ends. PostgreSQL: one pipelined transaction whose first round trip carries
        ``BEGIN``, a transaction-scoped advisory lock per key (taken in one statement, in the
        order of :func:`~allotment.storage.key_locks.advisory_pairs`; they leave no rows
        behind and are released by the ``COMMIT``) and, when ``state`` names it, the one
        statement reading the decision's state (:mod:`allotment.storage.enforcement_state`:
        a separate statement after the locks, so its snapshot is taken once they are held);
        the decision's writes and the ``COMMIT`` are the second. SQLite: in-process locks;
        ``state`` is read when the decision asks (:meth:`Session.read`)."""
        if not keys and once is None:
            yield Session(self.db, None)
            return
        if self.db.dialect != "postgresql":
            with self._local_locks.held([*keys, *([once] if once else [])]):
                yield Session(self.db, None, self._batcher)
            return
        first, second = advisory_pairs([*keys, *([once] if once else [])])
        denied: DomainError | None = None
        with self._sessions:
            with self.db.pipelined_write() as tx:
                tx.send(ADVISORY_LOCKS, [first, second])
                sent = None if state is None else send_state(tx, state)
                tx.sync()  # BEGIN, the locks, the state: one round trip
                read = None if state is None else decision_state(state, sent)
                session = Session(self.db, tx, state=read)
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


# ---------------------------------------------------------------- reservations


@dataclass(frozen=True, slots=True)
class ItemRecord:
    feature_key: str
    amount: Decimal
    expires_at_us: int
    held: bool
    event_type: str
    value_property: str | None
    committed: Decimal | None


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    id: str
    customer_id: str
    customer_ref: str
    status: str
    created_at_us: int
    expires_at_us: int
    settled_at_us: int | None
    outcome: str | None
    items: tuple[ItemRecord, ...]


def held_amount(tx: Tx, customer_id: str, feature_key: str, now_us: int) -> Decimal:
    """What the customer's held, unexpired reservations of the feature hold at ``now_us``:
    the kept total minus the held items already past their expiry (one round trip)."""
    row = tx.one(
        "SELECT (SELECT amount FROM reservation_hold_totals WHERE customer_id = ?"
        " AND feature_key = ?), (SELECT dec_sum(amount) FROM reservation_items"
        " WHERE customer_id = ? AND feature_key = ? AND held = 1 AND expires_at <= ?)",
        (customer_id, feature_key, customer_id, feature_key, now_us),
    )
    if row is None or row[0] is None:
        return Decimal(0)
    return dec(row[0]) - (Decimal(0) if row[1] is None else dec(row[1]))


def held_by_feature(tx: Tx, customer_id: str, now_us: int) -> dict[str, Decimal]:
    """:func:`held_amount` of every budget feature the customer holds something of, in one
    statement (one round trip): each kept total less its held items already past their
    expiry, looked up only for the features that have a total."""
    held: dict[str, Decimal] = {}
    for feature_key, total, expired in tx.execute(
        "SELECT t.feature_key, t.amount, (SELECT dec_sum(i.amount) FROM reservation_items i"
        " WHERE i.customer_id = t.customer_id AND i.feature_key = t.feature_key"
        " AND i.held = 1 AND i.expires_at <= ?)"
        " FROM reservation_hold_totals t WHERE t.customer_id = ?",
        (now_us, customer_id),
    ):
        amount = dec(total) - (Decimal(0) if expired is None else dec(expired))
        if amount != 0:
            held[str(feature_key)] = amount
    return held


def _add_held(tx: Tx, amounts: Sequence[tuple[str, str, Decimal]]) -> None:
    """Keep ``reservation_hold_totals`` equal to the sum of held items: add the (customer,
    feature, amount) ``amounts`` (negative when items stop being held)."""
    tx.execute_many(_ADD_HELD, amounts)


_ADD_HELD = (
    "INSERT INTO reservation_hold_totals (customer_id, feature_key, amount)"
    " VALUES (?, ?, ?) ON CONFLICT (customer_id, feature_key) DO UPDATE SET"
    " amount = dec_add(reservation_hold_totals.amount, excluded.amount)"
)
_INSERT_RESERVATION = (
    "INSERT INTO reservations (id, customer_id, customer_ref, status, created_at,"
    " expires_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_ITEM = (
    "INSERT INTO reservation_items (reservation_id, feature_key, customer_id, amount,"
    " expires_at, held, event_type, value_property) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
)


def insert_reservation(tx: Tx, r: ReservationRecord) -> None:
    insert_reservations(tx, [r])


def insert_reservations(tx: Tx, batch: Sequence[ReservationRecord]) -> None:
    tx.execute_many(_INSERT_RESERVATION, [_reservation_row(r) for r in batch])
    tx.execute_many(_INSERT_ITEM, [row for r in batch for row in _item_rows(r)])
    _add_held(tx, [row for r in batch for row in _hold_rows(r)])


def _reservation_row(r: ReservationRecord) -> tuple[object, ...]:
    return (r.id, r.customer_id, r.customer_ref, r.status, r.created_at_us, r.expires_at_us)


def _item_rows(r: ReservationRecord) -> list[tuple[object, ...]]:
    return [
        (r.id, i.feature_key, r.customer_id, i.amount, i.expires_at_us, i.event_type,
         i.value_property)
        for i in r.items
    ]  # fmt: skip


def _hold_rows(r: ReservationRecord) -> list[tuple[str, str, Decimal]]:
    return [(r.customer_id, i.feature_key, i.amount) for i in r.items]


def reservation(tx: Tx, reservation_id: str) -> ReservationRecord | None:
    row = tx.one(
        "SELECT id, customer_id, customer_ref, status, created_at, expires_at, settled_at,"
        " outcome FROM reservations WHERE id = ?",
        (reservation_id,),
    )
    if row is None:
        return None
    items = tx.execute(
        "SELECT feature_key, amount, expires_at, held, event_type, value_property, committed"
        " FROM reservation_items WHERE reservation_id = ? ORDER BY feature_key",
        (reservation_id,),
    )
    return ReservationRecord(
        id=str(row[0]),
        customer_id=str(row[1]),
        customer_ref=str(row[2]),
        status=str(row[3]),
        created_at_us=int(row[4]),
        expires_at_us=int(row[5]),
        settled_at_us=None if row[6] is None else int(row[6]),
        outcome=None if row[7] is None else str(row[7]),
        items=tuple(
            ItemRecord(
                feature_key=str(i[0]),
                amount=dec(i[1]),
                expires_at_us=int(i[2]),
                held=bool(i[3]),
                event_type=str(i[4]),
                value_property=None if i[5] is None else str(i[5]),
                committed=dec_or_none(i[6]),
            )
            for i in items
        ),
    )


def settle(
    tx: Tx,
    reservation_id: str,
    status: str,
    now_us: int,
    outcome: str,
    committed: dict[str, Decimal] | None = None,
    *,
    from_statuses: tuple[str, ...] = ("held",),
) -> bool:
    """``from_statuses`` → ``status`` (committed/released/expired); False when the
    reservation was in none of them (settled meanwhile)."""
    marks = ", ".join("?" for _ in from_statuses)
    changed = tx.rowcount(
        "UPDATE reservations SET status = ?, settled_at = ?, outcome = ?"
        f" WHERE id = ? AND status IN ({marks})",
        (status, now_us, outcome, reservation_id, *from_statuses),
    )
    if not changed:
        return False
    freed = tx.execute(
        "UPDATE reservation_items SET held = 0 WHERE reservation_id = ? AND held = 1"
        " RETURNING customer_id, feature_key, amount",
        (reservation_id,),
    )
    if freed:
        _add_held(tx, [(str(f[0]), str(f[1]), -dec(f[2])) for f in freed])
    for feature_key, amount in (committed or {}).items():
        tx.execute(
            "UPDATE reservation_items SET committed = ? WHERE reservation_id = ?"
            " AND feature_key = ?",
            (amount, reservation_id, feature_key),
        )
    return True


def sweep_expired(tx: Tx, now_us: int, limit: int) -> int:
    """Mark up to ``limit`` held reservations past their expiry as expired; drop up to
    ``limit`` idempotency records past theirs. Returns the number of rows touched.

    Correctness never waits for it (a hold past its expiry stops counting by itself); it keeps
    the held-but-expired ranges :func:`held_amount` subtracts short. The hold totals it lowers
    are updated in sorted key order, so two sweeps never wait on each other crosswise."""
    ids = [
        str(r[0])
        for r in tx.execute(
            "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= ?"
            " ORDER BY expires_at LIMIT ?",
            (now_us, limit),
        )
    ]
    expired: list[str] = []
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        marks = ", ".join("?" for _ in chunk)
        expired += [
            str(r[0])
            for r in tx.execute(
                "UPDATE reservations SET status = 'expired', settled_at = ?,"
                f" outcome = ? WHERE id IN ({marks})"
                " AND status = 'held' RETURNING id",
                (now_us, '{"status":"expired"}', *chunk),
            )
        ]
    freed: dict[tuple[str, str], Decimal] = {}
    for start in range(0, len(expired), 100):
        chunk = expired[start : start + 100]
        marks = ", ".join("?" for _ in chunk)
        for r in tx.execute(
            f"UPDATE reservation_items SET held = 0 WHERE reservation_id IN ({marks})"
            " AND held = 1 RETURNING customer_id, feature_key, amount",
            chunk,
        ):
            k = (str(r[0]), str(r[1]))
            freed[k] = freed.get(k, Decimal(0)) + dec(r[2])
    if freed:
        _add_held(tx, [(c, f, -a) for (c, f), a in sorted(freed.items())])
    dropped = tx.rowcount(
        "DELETE FROM idempotency_records WHERE (customer_id, idem_key) IN"
        " (SELECT customer_id, idem_key FROM idempotency_records WHERE expires_at <= ?"
        " LIMIT ?)",
        (now_us, limit),
    )
    return len(expired) + dropped


# ---------------------------------------------------------------- idempotency


def idempotency_record(tx: Tx, customer_id: str, key: str, now_us: int) -> tuple[str, str] | None:
    """``(request_hash, outcome)`` of the unexpired record, if any."""
    row = tx.one(
        "SELECT request_hash, outcome FROM idempotency_records"
        " WHERE customer_id = ? AND idem_key = ? AND expires_at > ?",
        (customer_id, key, now_us),
    )
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
