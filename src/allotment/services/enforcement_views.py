"""What enforcement answers — an authorize's result, an inline decision's outcome, a
reservation — and the data of a committed usage event (split from services/enforcement.py to
keep it short)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from allotment.domain import enforcement as rules
from allotment.domain.decimals import plain
from allotment.domain.errors import DomainError, InvalidInput
from allotment.domain.meters import compile_path
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage import enforcement_repo as repo
from allotment.storage.decision_checks import ReadChanged as ReadChanged


@dataclass(frozen=True, slots=True)
class AuthorizeResult:
    reservation_id: str | None
    remaining: Mapping[str, Decimal]
    overage: Mapping[str, Decimal]
    rate_limits: tuple[rules.RateState, ...]
    expires_at: datetime | None = None
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "allowed": True,
            "reservation_id": self.reservation_id,
            "remaining": {k: str(plain(v)) for k, v in self.remaining.items()},
            "rate_limits": [s.to_json() for s in self.rate_limits],
        }
        if self.expires_at is not None:
            out["expires_at_us"] = to_micros(self.expires_at)
        if self.overage:
            out["overage"] = {k: str(plain(v)) for k, v in self.overage.items()}
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, replayed: bool) -> AuthorizeResult:
        exp = d.get("expires_at_us")
        return cls(
            d.get("reservation_id"),
            {k: Decimal(v) for k, v in d["remaining"].items()},
            {k: Decimal(v) for k, v in d.get("overage", {}).items()},
            tuple(rules.RateState.from_json(s) for s in d["rate_limits"]),
            None if exp is None else from_micros(int(exp)),
            replayed,
        )


@dataclass(frozen=True, slots=True)
class Inline:
    """An :meth:`EnforcementService.authorize_inline` decision: the answer (a denial to
    raise, or the result); ``pending``: its writes are queued, answer once they are written."""

    outcome: AuthorizeResult | DomainError
    pending: bool


@dataclass(frozen=True, slots=True)
class Busy:
    """Not decided: a key is held by the inline decision whose token is ``holder``; or
    (``None``) by a blocking session, or the values are not cached — decide on a thread."""

    holder: object


@dataclass(frozen=True, slots=True)
class ReservationItemView:
    feature_reference: str
    amount: Decimal
    expires_at: datetime
    committed: Decimal | None


@dataclass(frozen=True, slots=True)
class ReservationView:
    id: str
    customer_reference: str
    status: str
    """``held``, ``committed``, ``released`` or ``expired``."""
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None
    items: tuple[ReservationItemView, ...] = field(default=())
    event_ids: tuple[str, ...] = ()


def reservation_view(r: repo.ReservationRecord, now_us: int) -> ReservationView:
    status = r.status
    if status == "held" and r.expires_at_us <= now_us:
        status = "expired"
    events = ()
    if r.status == "committed" and r.outcome:
        events = tuple(msgspec.json.decode(r.outcome).get("event_ids", ()))
    return ReservationView(
        r.id,
        r.customer_ref,
        status,
        from_micros(r.created_at_us),
        from_micros(r.expires_at_us),
        None if r.settled_at_us is None else from_micros(r.settled_at_us),
        tuple(
            ReservationItemView(i.feature_key, i.amount, from_micros(i.expires_at_us), i.committed)
            for i in r.items
        ),
        events,
    )


def usage_data(value_property: str | None, amount: Decimal, extra: Mapping[str, Any] | None) -> Any:
    """The ``data`` of a committed usage event: ``extra`` with ``amount`` at the meter's
    JSONPath (``$.usage.tokens`` → ``{"usage": {"tokens": amount}}``)."""
    doc: dict[str, Any] = dict(extra or {})
    if value_property is None:
        return doc
    steps = compile_path(value_property, "value_property")
    number: int | Decimal = int(amount) if amount == amount.to_integral_value() else plain(amount)
    if not steps or not all(isinstance(s, str) for s in steps):
        raise InvalidInput(
            f"the meter's valueProperty {value_property!r} is not a plain object path; a"
            " commit cannot write usage at it",
            field="amounts",
        )
    names = [str(s) for s in steps]
    node = doc
    for step in names[:-1]:
        child = node.get(step)
        if not isinstance(child, dict):
            child = {}
            node[step] = child
        node = child
    node[names[-1]] = number
    return doc


def settled(r: repo.ReservationRecord) -> rules.ReservationSettled:
    """The 409 of a commit or release of a reservation already settled the other way."""
    return rules.ReservationSettled(
        f"reservation {r.id} is already {r.status}; a reservation is settled once",
        extensions={"status": r.status},
    )
