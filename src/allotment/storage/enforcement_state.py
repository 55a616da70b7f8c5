"""The enforcement state one authorize decides on — its rate-limit logs, what its budgets hold,
its idempotency record — and the two ways it is read (storage/enforcement_repo.py's session
chooses):

* :class:`~allotment.storage.enforcement_repo.TxReads`: one statement per part, as the
  decision asks (SQLite: local reads);
* :func:`send_state`: all of it in **one** statement (:data:`StateQuery`), sent in the same
  round trip as the session's ``BEGIN`` and its key locks (PostgreSQL's pipelined session),
  answered by :class:`DecisionState`.

The statement reads what :func:`~allotment.storage.enforcement_repo.rate_log`,
:func:`~allotment.storage.reservations_repo.held_amount` and
:func:`~allotment.storage.enforcement_repo.idempotency_record` read, in the shared dialect
(``tests/enforcement/test_enforcement_state.py`` checks both on each engine). The stored form
of a rate-limit log (:func:`encode_log`) is here too, beside the one reader that decodes it
without a transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from allotment.domain.enforcement import AuthorizeRequest
from allotment.domain.rate_limits import Entry
from allotment.storage import usage_marks
from allotment.storage.database import Database, Pending, PipelinedTx, Row, dec

_LOG = tuple[tuple[int, int], ...]
_log_encoder = msgspec.json.Encoder()
_log_decoder = msgspec.json.Decoder(_LOG)


def encode_log(entries: Sequence[Entry]) -> str:
    """``[[at_us, n], ...]``, oldest first (encoded and decoded in C by msgspec)."""
    return _log_encoder.encode(entries).decode()


def decode_log(text: str) -> tuple[Entry, ...]:
    return _log_decoder.decode(text)


class StateReads(Protocol):
    """What a decision reads under its keys (the customer's id and the instant are the
    decision's)."""

    def rate_log(self, customer_id: str, feature_key: str, window_us: int) -> tuple[Entry, ...]:
        """The feature's log (empty when none, or kept for another window length)."""
        ...

    def held_amount(self, customer_id: str, feature_key: str, now_us: int) -> Decimal:
        """What the customer's held, unexpired reservations of the budget hold."""
        ...

    def idempotency_record(self, customer_id: str, key: str, now_us: int) -> tuple[str, str] | None:
        """``(request_hash, outcome)`` of the unexpired record, if any."""
        ...


@dataclass(frozen=True, slots=True)
class StateQuery:
    """What one decision will read, known before its keys are taken."""

    customer_id: str
    logs: Sequence[str]
    """Features whose rate-limit log is read (the consumed ones: a feature that is no rate
    limit has none, and costs nothing)."""
    holds: Sequence[str]
    """Budget features whose held amount is read (the reserved ones)."""
    idempotency_key: str | None
    now_us: int
    """The decision's instant (holds past it and records past it do not count)."""

    @classmethod
    def of(cls, customer_id: str, req: AuthorizeRequest, now_us: int) -> StateQuery:
        """What the enforcement service's decision reads of ``req``'s state."""
        logs = [c.feature_reference for c in req.consume]
        return cls(customer_id, logs, sorted(req.reserved_features()), req.idempotency_key, now_us)


@dataclass(slots=True)
class DecisionState:
    """:class:`StateReads` answered from one :func:`send_state` statement. Asking for a part
    the query did not name (another customer, feature or instant) is a bug: it raises."""

    query: StateQuery
    logs: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Feature → (window µs, entries as stored)."""
    held: dict[str, Decimal] = field(default_factory=dict)
    once: tuple[str, str] | None = None

    def rate_log(self, customer_id: str, feature_key: str, window_us: int) -> tuple[Entry, ...]:
        self._check(customer_id, feature_key in self.query.logs)
        found = self.logs.get(feature_key)
        if found is None or found[0] != window_us:
            return ()
        return decode_log(found[1])

    def held_amount(self, customer_id: str, feature_key: str, now_us: int) -> Decimal:
        self._check(customer_id, feature_key in self.query.holds and now_us == self.query.now_us)
        return self.held.get(feature_key, Decimal(0))

    def idempotency_record(self, customer_id: str, key: str, now_us: int) -> tuple[str, str] | None:
        q = self.query
        self._check(customer_id, key == q.idempotency_key and now_us == q.now_us)
        return self.once

    def _check(self, customer_id: str, named: bool) -> None:
        if customer_id != self.query.customer_id or not named:
            raise AssertionError(f"the decision's state was read for {self.query}")


def state_sql(q: StateQuery) -> tuple[str, list[object]]:
    """The one statement (and its parameters) reading everything ``q`` names: rows
    ``(part, key, window_us, text, amount, expired)`` — a log (``'l'``), a budget's kept hold
    total with the sum of its held items already expired (``'h'``), the idempotency record
    (``'i'``: request hash as key, outcome as text)."""
    parts: list[str] = []
    params: list[object] = []
    if q.logs:
        marks = ", ".join("?" for _ in q.logs)
        parts.append(
            "SELECT 'l', feature_key, window_us, entries, NULL, NULL FROM rate_limit_logs"
            f" WHERE customer_id = ? AND feature_key IN ({marks})"
        )
        params += [q.customer_id, *q.logs]
    if q.holds:
        marks = ", ".join("?" for _ in q.holds)
        parts.append(
            "SELECT 'h', t.feature_key, NULL, NULL, t.amount, (SELECT dec_sum(i.amount)"
            " FROM reservation_items i WHERE i.customer_id = t.customer_id"
            " AND i.feature_key = t.feature_key AND i.held = 1 AND i.expires_at <= ?)"
            " FROM reservation_hold_totals t"
            f" WHERE t.customer_id = ? AND t.feature_key IN ({marks})"
        )
        params += [q.now_us, q.customer_id, *q.holds]
    if q.idempotency_key is not None:
        parts.append(
            "SELECT 'i', request_hash, NULL, outcome, NULL, NULL FROM idempotency_records"
            " WHERE customer_id = ? AND idem_key = ? AND expires_at > ?"
        )
        params += [q.customer_id, q.idempotency_key, q.now_us]
    return " UNION ALL ".join(parts), params


def send_state(tx: PipelinedTx, q: StateQuery) -> Pending | None:
    """Queue :func:`state_sql` (``None`` when ``q`` names nothing); read it with
    :func:`decision_state` after the pipeline's sync."""
    sql, params = state_sql(q)
    return tx.send(sql, params) if sql else None


def read_state(db: Database, q: StateQuery) -> DecisionState:
    """The state ``q`` names, read by :func:`state_sql` as one statement without a
    transaction of its own (SQLite's decisions: one call into SQLite instead of ``BEGIN``, a
    statement per part and ``COMMIT``; one statement is its own snapshot)."""
    sql, params = state_sql(q)
    return _answered(q, usage_marks.read_rows(db, sql, params) if sql else [])


def decision_state(q: StateQuery, sent: Pending | None) -> DecisionState:
    return _answered(q, [] if sent is None else sent.rows())


STATE_COLUMNS = 6
"""The columns of :func:`state_sql`'s rows."""


def send_state_with(
    tx: PipelinedTx, q: StateQuery, other: tuple[str, Sequence[Any]]
) -> Callable[[], tuple[DecisionState, Row | None]]:
    """Queue :func:`state_sql` and ``other`` (a read statement of one row) as ONE statement
    (one snapshot; a statement less to send, bind and run): ``other``'s row beside each state
    row, and always a row (``other``'s columns NULL without one). What is returned answers,
    after the pipeline's sync, the state and ``other``'s row (``None`` without one)."""
    sql, params = state_sql(q)
    if not sql:
        sql, params = "SELECT " + ", ".join(["NULL"] * STATE_COLUMNS), []
    sent = tx.send(
        f"SELECT * FROM (SELECT 1) AS one LEFT JOIN ({other[0]}) AS a ON true"
        f" LEFT JOIN ({sql}) AS s ON true",
        [*other[1], *params],
    )

    def answer() -> tuple[DecisionState, Row | None]:
        rows = sent.rows()
        width = len(rows[0]) - 1 - STATE_COLUMNS
        first = tuple(rows[0][1 : 1 + width])
        state = _answered(q, [r[1 + width :] for r in rows if r[1 + width] is not None])
        return state, None if all(v is None for v in first) else first

    return answer


def _answered(q: StateQuery, rows: Sequence[Sequence[Any]]) -> DecisionState:
    state = DecisionState(q)
    for part, key, window_us, text, amount, expired in rows:
        if part == "l":
            state.logs[str(key)] = (int(window_us), str(text))
        elif part == "h":
            if amount is not None:
                less = Decimal(0) if expired is None else dec(expired)
                state.held[str(key)] = dec(amount) - less
        else:
            state.once = (str(key), str(text))
    return state
