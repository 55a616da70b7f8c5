"""What one authorize decision reads of the enforcement state, in ONE statement: the stored
rate-limit log of each consumed feature, the held amount of each reserved budget, and the
idempotency record of its key — what ``enforcement_repo.rate_log``, ``held_amount`` and
``idempotency_record`` answer, each as scalar subqueries of one ``SELECT``.

A decision reads this under its keys (``EnforcementStore.session`` or ``try_hold``): no other
decision or settlement writes these rows meanwhile, and the sweep leaves every held amount as
it was (it moves expired items out of both the total and the expired sum), so on SQLite the
statement needs no transaction of its own (one statement is its own snapshot): one call into
SQLite instead of ``BEGIN``, a statement per item and ``COMMIT``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from allotment.domain.rate_limits import Entry
from allotment.storage import usage_marks
from allotment.storage.database import Database, Row, dec
from allotment.storage.enforcement_repo import decode_log

RunOne = Callable[[str, Sequence[Any]], Row]
"""Runs one read statement and answers its (only) row."""


def alone(db: Database) -> RunOne:
    """Each statement on its own (SQLite: on this thread's connection, no transaction; see
    :func:`allotment.storage.usage_marks.read_one`)."""

    def run(sql: str, params: Sequence[Any]) -> Row:
        return tuple(usage_marks.read_one(db, sql, params))

    return run


_LOG_WINDOW = "(SELECT window_us FROM rate_limit_logs WHERE customer_id = ? AND feature_key = ?)"
_LOG_ENTRIES = "(SELECT entries FROM rate_limit_logs WHERE customer_id = ? AND feature_key = ?)"
_HELD_TOTAL = (
    "(SELECT amount FROM reservation_hold_totals WHERE customer_id = ? AND feature_key = ?)"
)
_HELD_EXPIRED = (
    "(SELECT dec_sum(amount) FROM reservation_items WHERE customer_id = ? AND feature_key = ?"
    " AND held = 1 AND expires_at <= ?)"
)
_IDEM_HASH = (
    "(SELECT request_hash FROM idempotency_records WHERE customer_id = ? AND idem_key = ?"
    " AND expires_at > ?)"
)
_IDEM_OUTCOME = (
    "(SELECT outcome FROM idempotency_records WHERE customer_id = ? AND idem_key = ?"
    " AND expires_at > ?)"
)


@dataclass(frozen=True, slots=True)
class DecisionState:
    logs: dict[str, tuple[Entry, ...]]
    """Per consumed feature: its stored log (empty when none, or kept for another window)."""
    held: dict[str, Decimal]
    """Per reserved budget: what its held, unexpired reservations hold now."""
    idempotency: tuple[str, str] | None
    """``(request_hash, outcome)`` of the key's unexpired record, if any."""


def decision_state(
    run: RunOne,
    customer_id: str,
    *,
    rates: Sequence[tuple[str, int]],
    budgets: Sequence[str],
    now_us: int,
    idempotency_key: str | None,
) -> DecisionState:
    """``rates``: (feature, window µs) of each consumed rate limit; ``budgets``: each
    reserved feature."""
    parts: list[str] = []
    params: list[Any] = []
    for feature, _ in rates:
        parts += (_LOG_WINDOW, _LOG_ENTRIES)
        params += (customer_id, feature, customer_id, feature)
    for feature in budgets:
        parts += (_HELD_TOTAL, _HELD_EXPIRED)
        params += (customer_id, feature, customer_id, feature, now_us)
    if idempotency_key is not None:
        parts += (_IDEM_HASH, _IDEM_OUTCOME)
        params += (customer_id, idempotency_key, now_us) * 2
    if not parts:
        return DecisionState({}, {}, None)
    row = run("SELECT " + ", ".join(parts), params)
    logs: dict[str, tuple[Entry, ...]] = {}
    i = 0
    for feature, window_us in rates:
        window, entries = row[i], row[i + 1]
        i += 2
        logs[feature] = (
            () if window is None or int(window) != window_us else decode_log(str(entries))
        )
    held: dict[str, Decimal] = {}
    for feature in budgets:
        total, expired = row[i], row[i + 1]
        i += 2
        held[feature] = (
            Decimal(0)
            if total is None
            else dec(total) - (Decimal(0) if expired is None else dec(expired))
        )
    idem = None
    if idempotency_key is not None and row[i] is not None:
        idem = (str(row[i]), str(row[i + 1]))
    return DecisionState(logs, held, idem)
