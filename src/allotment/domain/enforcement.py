"""Enforcement rules (catalog.md §6), pure: what one authorize asks, what a customer is
entitled to, and the all-or-nothing decision. No IO, no clock.

Order of evaluation (the first failing step answers; nothing is applied unless every item of
every step passes):

1. the request itself: every item names a feature of the right kind (400 otherwise);
2. ``checks``: ENUM value allowed, SWITCH on, entitled at all (403);
3. ``reserve``: each budget covers ``held reservations + amount`` (402), unless soft-limited;
4. ``consume``: each rate limit allows ``amount`` more requests now (429 with the exact wait).

Budgets come before rate limits: a 429 invites a retry that a 402 would refuse anyway.

Longer than ~500 lines on purpose: its four parts (the §6 error codes, what a customer has,
the request, the decision) are one contract, read top to bottom in the order above, and each
part uses the types of the one before. The request parser (``parse_authorize``,
``parse_commit`` and their item types) is the part to move to a module of its own if it grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from allotment.domain import limits
from allotment.domain import rate_limits as rl
from allotment.domain.decimals import parse_amount, plain
from allotment.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    LimitExceeded,
    PaymentRequired,
    TooManyRequests,
)

# ---------------------------------------------------------------- errors (codes of §6)


class EnumValueNotAllowed(Forbidden):
    code = "enum_value_not_allowed"


class SwitchOff(Forbidden):
    code = "switch_off"


class NotEntitled(Forbidden):
    code = "not_entitled"


class BudgetExhausted(PaymentRequired):
    code = "budget_exhausted"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class ReservationSettled(Conflict):
    code = "reservation_settled"


@dataclass(frozen=True, slots=True)
class RateState:
    """One rate limit as a response shows it (and the RateLimit headers)."""

    feature_reference: str
    limit: int
    window: str
    window_us: int
    remaining: int
    reset_us: int

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_reference": self.feature_reference,
            "limit": self.limit,
            "window": self.window,
            "window_seconds": self.window_us // 1_000_000,
            "remaining": self.remaining,
            "reset_seconds": rl.seconds_up(self.reset_us),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RateState:
        return cls(
            str(d["feature_reference"]),
            int(d["limit"]),
            str(d["window"]),
            int(d["window_seconds"]) * 1_000_000,
            int(d["remaining"]),
            int(d["reset_seconds"]) * 1_000_000,
        )


class RateLimited(TooManyRequests):
    code = "rate_limited"

    def __init__(
        self,
        detail: str,
        *,
        states: Sequence[RateState],
        retry_after_us: int,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, extensions=extensions)
        self.states = tuple(states)
        self.retry_after_us = retry_after_us


DENIALS: dict[str, type[DomainError]] = {
    c.code: c for c in (EnumValueNotAllowed, SwitchOff, NotEntitled, BudgetExhausted)
}


def denial_to_json(exc: DomainError) -> dict[str, Any]:
    """A denial as stored for its idempotency key (replayed by :func:`denial_from_json`)."""
    out: dict[str, Any] = {"denied": exc.code, "detail": exc.detail, "extensions": exc.extensions}
    if isinstance(exc, RateLimited):
        out["retry_after_us"] = exc.retry_after_us
        out["rate_limits"] = [s.to_json() for s in exc.states]
    return out


def denial_from_json(d: Mapping[str, Any]) -> DomainError:
    code = str(d["denied"])
    if code == RateLimited.code:
        return RateLimited(
            str(d["detail"]),
            states=[RateState.from_json(s) for s in d["rate_limits"]],
            retry_after_us=int(d["retry_after_us"]),
            extensions=d.get("extensions"),
        )
    return DENIALS[code](str(d["detail"]), extensions=d.get("extensions"))


# ---------------------------------------------------------------- what a customer has


@dataclass(frozen=True, slots=True)
class Budget:
    """A NUMBER budget's state now: ``balance`` is what is left of the period's allowance
    after usage (before held reservations)."""

    balance: Decimal
    usage: Decimal
    soft_limit: bool
    event_type: str
    """The meter's event type: a commit records usage as an event of this type."""
    value_property: str | None
    """The meter's JSONPath (``$.tokens``) the committed amount is written at."""


@dataclass(frozen=True, slots=True)
class Entitled:
    """One effective value of a customer (its plan's, or an override)."""

    feature_reference: str
    type: str
    """``NUMBER``, ``ENUM``, ``SWITCH`` or ``AMOUNT``."""
    number: Decimal | None = None
    unlimited: bool = False
    rate_window: str | None = None
    enums: tuple[str, ...] = ()
    switch: bool | None = None
    budget: Budget | None = None

    @property
    def is_rate_limit(self) -> bool:
        return self.type == "NUMBER" and self.rate_window is not None

    @property
    def is_budget(self) -> bool:
        return self.type == "NUMBER" and self.budget is not None


@dataclass(frozen=True, slots=True)
class CustomerEntitlements:
    customer_id: str
    customer_reference: str
    pricing_plan_reference: str | None
    values: Mapping[str, Entitled]


# ---------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class Check:
    feature_reference: str
    value: str | Decimal | None


@dataclass(frozen=True, slots=True)
class Consume:
    feature_reference: str
    amount: int


@dataclass(frozen=True, slots=True)
class Reserve:
    feature_reference: str
    amount: Decimal
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    checks: tuple[Check, ...] = ()
    consume: tuple[Consume, ...] = ()
    reserve: tuple[Reserve, ...] = ()
    idempotency_key: str | None = None
    fingerprint: str = ""
    """A hash of everything but the key: the same key with another request is a 409."""

    def lock_features(self) -> list[str]:
        return sorted({c.feature_reference for c in self.consume} | self.reserved_features())

    def reserved_features(self) -> set[str]:
        return {r.feature_reference for r in self.reserve}

    def named_features(self) -> frozenset[str]:
        """Every feature the request names: all a decision reads of the customer's values."""
        return frozenset(
            [c.feature_reference for c in self.checks]
            + [c.feature_reference for c in self.consume]
            + [r.feature_reference for r in self.reserve]
        )


_ITEM_FIELDS = {
    "checks": {"feature_reference", "value"},
    "consume": {"feature_reference", "amount"},
    "reserve": {"feature_reference", "amount", "ttl_seconds"},
}


def _items(body: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    raw = body.get(name, [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput(f"{name}: must be an array", field=name)
    if len(raw) > limits.AUTHORIZE_ITEMS_MAX:
        raise LimitExceeded(
            f"{name}: {len(raw)} items exceed the limit of {limits.AUTHORIZE_ITEMS_MAX}",
            field=name,
        )
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: must be an object", field=where)
        unknown = sorted(set(item) - _ITEM_FIELDS[name])
        if unknown:
            raise InvalidInput(
                f"{where}.{unknown[0]}: unknown field", field=f"{where}.{unknown[0]}"
            )
        ref = item.get("feature_reference")
        if not isinstance(ref, str) or not ref:
            raise InvalidInput(
                f"{where}.feature_reference: required, a feature reference",
                field=f"{where}.feature_reference",
            )
        if ref in seen:
            raise InvalidInput(
                f"{where}.feature_reference: {ref!r} appears twice in {name}",
                field=f"{where}.feature_reference",
            )
        seen.add(ref)
    return raw


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise InvalidInput(f"{where}: must be an integer", field=where)
    number = parse_amount(value, where)
    if number != number.to_integral_value():
        raise InvalidInput(f"{where}: must be an integer, got {value}", field=where)
    if not lo <= number <= hi:
        raise InvalidInput(f"{where}: must be between {lo} and {hi}, got {value}", field=where)
    return int(number)


def parse_authorize(body: Any) -> AuthorizeRequest:
    """Validate an authorize body completely (before anything is read or written)."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    unknown = sorted(set(body) - {"checks", "consume", "reserve", "idempotency_key"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field", field=unknown[0])
    checks = []
    for i, item in enumerate(_items(body, "checks")):
        value = item.get("value")
        where = f"checks[{i}].value"
        if isinstance(value, bool) or not (value is None or isinstance(value, str | int | Decimal)):
            raise InvalidInput(f"{where}: must be a string or a number", field=where)
        checks.append(
            Check(
                item["feature_reference"],
                parse_amount(value, where) if isinstance(value, int | Decimal) else value,
            )
        )
    consume = [
        Consume(
            item["feature_reference"],
            _int(item.get("amount", 1), f"consume[{i}].amount", 1, limits.RATE_CONSUME_AMOUNT_MAX),
        )
        for i, item in enumerate(_items(body, "consume"))
    ]
    reserve = []
    for i, item in enumerate(_items(body, "reserve")):
        where = f"reserve[{i}].amount"
        if "amount" not in item:
            raise InvalidInput(f"{where}: required", field=where)
        amount = parse_amount(item["amount"], where)
        if amount <= 0:
            raise InvalidInput(
                f"{where}: must be greater than 0, got {item['amount']}", field=where
            )
        ttl = _int(
            item.get("ttl_seconds", limits.RESERVATION_TTL_SECONDS_DEFAULT),
            f"reserve[{i}].ttl_seconds",
            1,
            limits.RESERVATION_TTL_SECONDS_MAX,
        )
        reserve.append(Reserve(item["feature_reference"], amount, ttl))
    key = body.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not key:
            raise InvalidInput(
                "idempotency_key: must be a non-empty string", field="idempotency_key"
            )
        if len(key) > limits.IDEMPOTENCY_KEY_LENGTH_MAX:
            raise LimitExceeded(
                f"idempotency_key: {len(key)} characters exceed the limit of "
                f"{limits.IDEMPOTENCY_KEY_LENGTH_MAX}",
                field="idempotency_key",
            )
    canonical = msgspec.json.encode(
        [
            [[c.feature_reference, None if c.value is None else str(c.value)] for c in checks],
            [[c.feature_reference, c.amount] for c in consume],
            [[r.feature_reference, str(plain(r.amount)), r.ttl_seconds] for r in reserve],
        ]
    )
    return AuthorizeRequest(
        tuple(checks),
        tuple(consume),
        tuple(reserve),
        key,
        hashlib.sha256(canonical).hexdigest(),
    )


@dataclass(frozen=True, slots=True)
class CommitRequest:
    amounts: Mapping[str, Decimal]
    subject: str | None = None
    data: Mapping[str, Any] | None = None


def parse_commit(body: Any) -> CommitRequest:
    if body is None:
        return CommitRequest({})
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    unknown = sorted(set(body) - {"amounts", "subject", "data"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field", field=unknown[0])
    raw = body.get("amounts", {})
    if not isinstance(raw, dict):
        raise InvalidInput(
            "amounts: must be an object of feature reference to amount", field="amounts"
        )
    amounts = {}
    for ref, value in raw.items():
        amount = parse_amount(value, f"amounts.{ref}")
        if amount < 0:
            raise InvalidInput(
                f"amounts.{ref}: must be 0 or more, got {value}", field=f"amounts.{ref}"
            )
        amounts[str(ref)] = amount
    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise InvalidInput("subject: must be a non-empty string", field="subject")
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        raise InvalidInput("data: must be an object", field="data")
    return CommitRequest(amounts, subject, data)


# ---------------------------------------------------------------- the decision


@dataclass(frozen=True, slots=True)
class Held:
    """One reserve item that passed: what to hold, until when."""

    feature_reference: str
    amount: Decimal
    ttl_seconds: int
    budget: Budget | None


@dataclass(frozen=True, slots=True)
class Allowed:
    logs: Mapping[str, tuple[rl.Entry, ...]]
    """The new rate-limit log of every consumed (limited) feature."""
    windows: Mapping[str, int]
    holds: tuple[Held, ...]
    remaining: Mapping[str, Decimal]
    """Per consumed or reserved feature: what is left after this request (rate limits: requests
    left in the window; budgets: balance − held, this reservation included)."""
    overage: Mapping[str, Decimal]
    """Soft-limited budgets: how far this reservation goes past the balance."""
    rate_limits: tuple[RateState, ...] = field(default=())


def _entitled(ents: CustomerEntitlements, ref: str, where: str, plan_name: str) -> Entitled:
    value = ents.values.get(ref)
    if value is None:
        raise NotEntitled(
            f"customer {ents.customer_reference!r} is not entitled to feature {ref!r}"
            f" ({plan_name})",
            field=where,
            extensions={"feature_reference": ref},
        )
    return value


def _plan_name(ents: CustomerEntitlements) -> str:
    if ents.pricing_plan_reference is None:
        return "no active subscription"
    return f"plan {ents.pricing_plan_reference!r}"


def validate_kinds(req: AuthorizeRequest, ents: CustomerEntitlements) -> None:
    """400 for an item whose feature cannot take it (only for features the customer has;
    one it lacks is a 403 of the check steps)."""
    for i, c in enumerate(req.consume):
        v = ents.values.get(c.feature_reference)
        if v is not None and not v.is_rate_limit:
            raise InvalidInput(
                f"consume[{i}].feature_reference: {c.feature_reference!r} is a {v.type}"
                " feature without rate_window; only rate limits are consumed",
                field=f"consume[{i}].feature_reference",
            )
    for i, r in enumerate(req.reserve):
        v = ents.values.get(r.feature_reference)
        if v is not None and not v.is_budget:
            raise InvalidInput(
                f"reserve[{i}].feature_reference: {r.feature_reference!r} is not a budget"
                " (a NUMBER feature with meter_reference); only budgets are reserved",
                field=f"reserve[{i}].feature_reference",
            )


def run_checks(
    req: AuthorizeRequest,
    ents: CustomerEntitlements,
    plans_including: Callable[[str, str], Sequence[str]],
) -> None:
    plan = _plan_name(ents)
    for i, c in enumerate(req.checks):
        v = _entitled(ents, c.feature_reference, f"checks[{i}]", plan)
        if v.type == "ENUM":
            if not isinstance(c.value, str):
                raise InvalidInput(
                    f"checks[{i}].value: {c.feature_reference!r} is an ENUM feature; name the"
                    " value to check",
                    field=f"checks[{i}].value",
                )
            if c.value not in v.enums:
                plans = list(plans_including(c.feature_reference, c.value))
                where = (
                    "no plan includes it"
                    if not plans
                    else "included in " + ", ".join(repr(p) for p in plans)
                )
                raise EnumValueNotAllowed(
                    f"{c.value!r} is not allowed for {c.feature_reference!r} on {plan}"
                    f" of customer {ents.customer_reference!r}; {where}",
                    extensions={
                        "feature_reference": c.feature_reference,
                        "value": c.value,
                        "pricing_plan_reference": ents.pricing_plan_reference,
                        "plans_including": plans,
                        "allowed": list(v.enums),
                    },
                )
        elif v.type == "SWITCH":
            if not v.switch:
                raise SwitchOff(
                    f"feature {c.feature_reference!r} is off on {plan} of customer"
                    f" {ents.customer_reference!r}",
                    extensions={
                        "feature_reference": c.feature_reference,
                        "pricing_plan_reference": ents.pricing_plan_reference,
                    },
                )
        elif v.type == "NUMBER" and c.value is not None and not v.unlimited:
            assert v.number is not None
            asked = parse_amount(c.value, f"checks[{i}].value")
            if asked > v.number:
                raise NotEntitled(
                    f"{plain(asked)} exceeds {c.feature_reference!r} = {plain(v.number)} on"
                    f" {plan} of customer {ents.customer_reference!r}",
                    field=f"checks[{i}].value",
                    extensions={
                        "feature_reference": c.feature_reference,
                        "value": str(plain(asked)),
                        "limit": str(plain(v.number)),
                    },
                )


def decide(
    req: AuthorizeRequest,
    ents: CustomerEntitlements,
    *,
    logs: Mapping[str, tuple[rl.Entry, ...]],
    held: Mapping[str, Decimal],
    now_us: int,
    plans_including: Callable[[str, str], Sequence[str]],
    checked: bool = False,
) -> Allowed:
    """The whole decision; raises the first denial. ``logs`` and ``held`` are the stored
    rate-limit logs and held reservation totals of the consumed and reserved features.
    ``checked``: the caller has already run :func:`validate_kinds` and :func:`run_checks`
    on these ``req`` and ``ents`` (they passed), so they are not run again."""
    if not checked:
        validate_kinds(req, ents)
        run_checks(req, ents, plans_including)
    plan = _plan_name(ents)
    remaining: dict[str, Decimal] = {}
    overage: dict[str, Decimal] = {}
    holds = []
    for i, r in enumerate(req.reserve):
        v = _entitled(ents, r.feature_reference, f"reserve[{i}]", plan)
        holds.append(Held(r.feature_reference, r.amount, r.ttl_seconds, v.budget))
        if v.unlimited or v.budget is None:
            continue
        reserved = held.get(r.feature_reference, Decimal(0))
        available = v.budget.balance - reserved
        if r.amount > available and not v.budget.soft_limit:
            raise BudgetExhausted(
                f"budget {r.feature_reference!r} of customer {ents.customer_reference!r} has"
                f" {plain(max(available, Decimal(0)))} left (balance {plain(v.budget.balance)},"
                f" reserved {plain(reserved)}); {plain(r.amount)} requested",
                extensions={
                    "feature_reference": r.feature_reference,
                    "balance": str(plain(v.budget.balance)),
                    "reserved": str(plain(reserved)),
                    "requested": str(plain(r.amount)),
                    "pricing_plan_reference": ents.pricing_plan_reference,
                },
            )
        remaining[r.feature_reference] = available - r.amount
        if r.amount > available:
            overage[r.feature_reference] = r.amount - max(available, Decimal(0))
    new_logs: dict[str, tuple[rl.Entry, ...]] = {}
    windows: dict[str, int] = {}
    states: list[RateState] = []
    denied: list[RateState] = []
    wait = 0
    for i, c in enumerate(req.consume):
        v = _entitled(ents, c.feature_reference, f"consume[{i}]", plan)
        if v.unlimited:
            continue
        assert v.number is not None
        assert v.rate_window is not None
        limit = int(v.number)  # floor: 2.5 per minute allows 2
        window_us = rl.WINDOW_US[v.rate_window]
        if c.amount > limit:
            raise NotEntitled(
                f"{c.amount} requests can never fit {c.feature_reference!r} = {limit} per"
                f" {v.rate_window} on {plan} of customer {ents.customer_reference!r}",
                extensions={"feature_reference": c.feature_reference, "limit": limit},
            )
        d = rl.decide(
            logs.get(c.feature_reference, ()),
            limit=limit,
            window_us=window_us,
            now_us=now_us,
            amount=c.amount,
        )
        state = RateState(
            c.feature_reference, limit, v.rate_window, window_us, d.remaining, d.reset_us
        )
        states.append(state)
        if d.allowed:
            new_logs[c.feature_reference] = d.log
            windows[c.feature_reference] = window_us
            remaining[c.feature_reference] = Decimal(d.remaining)
        else:
            denied.append(state)
            wait = max(wait, d.retry_after_us)
    if denied:
        names = ", ".join(f"{s.feature_reference!r} ({s.limit} per {s.window})" for s in denied)
        raise RateLimited(
            f"rate limit reached for customer {ents.customer_reference!r}: {names}; retry"
            f" after {rl.retry_after_seconds(wait)} s",
            states=denied,
            retry_after_us=wait,
            extensions={
                "feature_references": [s.feature_reference for s in denied],
                "retry_after_ms": -(-wait // 1000),
            },
        )
    return Allowed(new_logs, windows, tuple(holds), remaining, overage, tuple(states))
