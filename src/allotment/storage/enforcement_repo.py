"""Enforcement state: rate-limit logs, reservations, idempotency records, and the locks that
make one customer's decisions exact across replicas.

Exactness: every authorize and settlement runs inside :meth:`EnforcementStore.session` over
the (customer, feature) keys it touches. On PostgreSQL the session is one transaction that
first takes a row lock per key (``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR
UPDATE`` in sorted order, so two sessions never wait on each other crosswise), then an
advisory lock for an idempotency key; reads made on
other connections while it is open (the budget's balance) see everything committed by the
sessions before it, and its writes commit when it ends. On SQLite (one server process) the
keys are in-process locks and every write is one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from allotment.domain.rate_limits import Entry
from allotment.storage.database import Database, Tx, dec, dec_or_none

_STRIPES = 1024


class _StripedLocks:
    """In-process locks for SQLite: a key maps to one of ``_STRIPES`` locks; a session takes
    its stripes in ascending order (no deadlock; two keys sharing a stripe only serialise)."""

    def __init__(self) -> None:
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    @contextmanager
    def held(self, keys: Sequence[str]) -> Iterator[None]:
        stripes = sorted({_stripe(k) for k in keys})
        taken: list[threading.Lock] = []
        try:
            for s in stripes:
                lock = self._locks[s]
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()


def _stripe(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) % _STRIPES


class Session:
    """What an enforcement decision may do while it holds its keys."""

    def __init__(self, db: Database, tx: Tx | None) -> None:
        self._db = db
        self._tx = tx

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """The session's writes: on PostgreSQL its own locked transaction (committed when the
        session ends), on SQLite a write transaction of its own."""
        if self._tx is not None:
            yield self._tx
            return
        with self._db.write() as tx:
            yield tx


class EnforcementStore:
    def __init__(self, db: Database, *, max_sessions: int = 4) -> None:
        """``max_sessions``: PostgreSQL sessions open at once in this process. A session
        holds a pooled connection while a reservation reads the budget on another one; keep
        it below the pool size (the container passes half of it) so they never starve."""
        self.db = db
        self._local_locks = _StripedLocks()
        self._sessions = threading.BoundedSemaphore(max(1, max_sessions))

    @contextmanager
    def session(self, keys: Sequence[str], *, once: str | None = None) -> Iterator[Session]:
        """Hold ``keys`` (a customer's features: a lock row each on PostgreSQL, bounded by
        customers × features) and ``once`` (an idempotency key: a transaction-scoped advisory
        lock on PostgreSQL, so one-off keys leave no rows behind) until the session ends."""
        if not keys and once is None:
            yield Session(self.db, None)
            return
        if self.db.dialect != "postgresql":
            with self._local_locks.held([*keys, *([once] if once else [])]):
                yield Session(self.db, None)
            return
        ordered = sorted(set(keys))
        with self._sessions, self.db.write() as tx:
            if ordered:
                tx.execute(
                    "INSERT INTO enforcement_locks (lock_key) SELECT unnest(?::text[])"
                    " ON CONFLICT DO NOTHING",
                    [ordered],
                )
                tx.execute(
                    "SELECT lock_key FROM enforcement_locks WHERE lock_key = ANY(?::text[])"
                    " ORDER BY lock_key FOR UPDATE",
                    [ordered],
                )
            if once is not None:  # taken last: a session holding it waits for nothing more
                tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (once,))
            yield Session(self.db, tx)


# ---------------------------------------------------------------- rate-limit logs


_LOG = tuple[tuple[int, int], ...]
_log_encoder = msgspec.json.Encoder()
_log_decoder = msgspec.json.Decoder(_LOG)


def encode_log(entries: Sequence[Entry]) -> str:
    """``[[at_us, n], ...]``, oldest first (encoded and decoded in C by msgspec)."""
    return _log_encoder.encode(entries).decode()


def decode_log(text: str) -> tuple[Entry, ...]:
    return _log_decoder.decode(text)


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
    tx.execute(
        "INSERT INTO rate_limit_logs (customer_id, feature_key, window_us, entries, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id, feature_key) DO UPDATE SET"
        " window_us = excluded.window_us, entries = excluded.entries,"
        " updated_at = excluded.updated_at",
        (customer_id, feature_key, window_us, encode_log(entries), now_us),
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
    row = tx.one(
        "SELECT dec_sum(amount) FROM reservation_items"
        " WHERE customer_id = ? AND feature_key = ? AND held = 1 AND expires_at > ?",
        (customer_id, feature_key, now_us),
    )
    return dec(row[0]) if row is not None and row[0] is not None else Decimal(0)


def held_by_feature(tx: Tx, customer_id: str, now_us: int) -> dict[str, Decimal]:
    rows = tx.execute(
        "SELECT feature_key, dec_sum(amount) FROM reservation_items"
        " WHERE customer_id = ? AND held = 1 AND expires_at > ? GROUP BY feature_key",
        (customer_id, now_us),
    )
    return {str(r[0]): dec(r[1]) for r in rows}


def insert_reservation(tx: Tx, r: ReservationRecord) -> None:
    tx.execute(
        "INSERT INTO reservations (id, customer_id, customer_ref, status, created_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (r.id, r.customer_id, r.customer_ref, r.status, r.created_at_us, r.expires_at_us),
    )
    tx.execute_many(
        "INSERT INTO reservation_items (reservation_id, feature_key, customer_id, amount,"
        " expires_at, held, event_type, value_property) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
        [
            (
                r.id,
                i.feature_key,
                r.customer_id,
                i.amount,
                i.expires_at_us,
                i.event_type,
                i.value_property,
            )
            for i in r.items
        ],
    )


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
    tx.execute("UPDATE reservation_items SET held = 0 WHERE reservation_id = ?", (reservation_id,))
    for feature_key, amount in (committed or {}).items():
        tx.execute(
            "UPDATE reservation_items SET committed = ? WHERE reservation_id = ?"
            " AND feature_key = ?",
            (amount, reservation_id, feature_key),
        )
    return True


def sweep_expired(tx: Tx, now_us: int, limit: int) -> int:
    """Mark up to ``limit`` held reservations past their expiry as expired; drop up to
    ``limit`` idempotency records past theirs. Returns the number of rows touched."""
    ids = [
        str(r[0])
        for r in tx.execute(
            "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= ?"
            " ORDER BY expires_at LIMIT ?",
            (now_us, limit),
        )
    ]
    for rid in ids:
        settle(tx, rid, "expired", now_us, '{"status":"expired"}')
    dropped = tx.rowcount(
        "DELETE FROM idempotency_records WHERE (customer_id, idem_key) IN"
        " (SELECT customer_id, idem_key FROM idempotency_records WHERE expires_at <= ?"
        " LIMIT ?)",
        (now_us, limit),
    )
    return len(ids) + dropped


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
    tx.execute(
        "INSERT INTO idempotency_records (customer_id, idem_key, request_hash, outcome,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (customer_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash,"
        " outcome = excluded.outcome, created_at = excluded.created_at,"
        " expires_at = excluded.expires_at",
        (customer_id, key, request_hash, outcome, now_us, expires_at_us),
    )
