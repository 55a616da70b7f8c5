"""Reservation records (catalog.md §6, docs/api/enforcement.md "Reservations"): the
reservations and their items, the kept hold totals per (customer, budget), settlement and the
expiry sweep. Read and written only inside an enforcement session
(:mod:`allotment.storage.enforcement_repo`, which re-exports these names), under its keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from allotment.storage.database import Tx, dec, dec_or_none


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
    tx.execute_many(ADD_HELD, amounts)


ADD_HELD = (
    "INSERT INTO reservation_hold_totals (customer_id, feature_key, amount)"
    " VALUES (?, ?, ?) ON CONFLICT (customer_id, feature_key) DO UPDATE SET"
    " amount = dec_add(reservation_hold_totals.amount, excluded.amount)"
)
INSERT_RESERVATION = (
    "INSERT INTO reservations (id, customer_id, customer_ref, status, created_at,"
    " expires_at) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_ITEM = (
    "INSERT INTO reservation_items (reservation_id, feature_key, customer_id, amount,"
    " expires_at, held, event_type, value_property) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
)


def insert_reservation(tx: Tx, r: ReservationRecord) -> None:
    insert_reservations(tx, [r])


def insert_reservations(tx: Tx, batch: Sequence[ReservationRecord]) -> None:
    tx.execute_many(INSERT_RESERVATION, [reservation_row(r) for r in batch])
    tx.execute_many(INSERT_ITEM, [row for r in batch for row in item_rows(r)])
    _add_held(tx, [row for r in batch for row in hold_rows(r)])


def reservation_row(r: ReservationRecord) -> tuple[object, ...]:
    return (r.id, r.customer_id, r.customer_ref, r.status, r.created_at_us, r.expires_at_us)


def item_rows(r: ReservationRecord) -> list[tuple[object, ...]]:
    return [
        (r.id, i.feature_key, r.customer_id, i.amount, i.expires_at_us, i.event_type,
         i.value_property)
        for i in r.items
    ]  # fmt: skip


def hold_rows(r: ReservationRecord) -> list[tuple[str, str, Decimal]]:
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
