"""Pricing plans, their versions and subscriptions (catalog.md §3–§4). Pure, no IO.

A plan has numbered versions; version n is never edited once written and the newest one is
the active one (new subscriptions land on it). A subscription stays on its version until it is
moved. Its overrides are per-feature values that take precedence over the version's values;
the customer stays on the plan.

The effective values of a subscription (:func:`effective_values`) are the version's values with
the overrides laid over them, in the version's order, overrides of features the version leaves
out appended after them in reference order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from allotment.domain.catalog import TypedValue
from allotment.domain.errors import Conflict, InvalidInput, NotFound

ACTIVE = "ACTIVE"
CANCELED = "CANCELED"


class PlanNotFound(NotFound):
    code = "PRICING_PLAN_NOT_FOUND"


class PlanVersionNotFound(NotFound):
    code = "PRICING_PLAN_VERSION_NOT_FOUND"


class PlanExists(Conflict):
    code = "PRICING_PLAN_ALREADY_EXISTS"


class PlanArchived(InvalidInput):
    code = "PRICING_PLAN_ARCHIVED"


class UnknownPlan(InvalidInput):
    """A subscription names a plan or version that does not exist (400: bad input)."""

    code = "PRICING_PLAN_NOT_FOUND"


class SubscriptionNotFound(NotFound):
    code = "SUBSCRIPTION_NOT_FOUND"


class SubscriptionExists(Conflict):
    code = "ACTIVE_SUBSCRIPTION_EXISTS"


class SubscriptionCanceled(Conflict):
    code = "SUBSCRIPTION_CANCELED"


@dataclass(frozen=True, slots=True)
class PlanVersion:
    plan_id: str
    version: int
    values: tuple[TypedValue, ...]
    created_at: datetime

    def value_for(self, feature_reference: str) -> TypedValue | None:
        for v in self.values:
            if v.feature_reference == feature_reference:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    reference: str
    name: str
    description: str | None
    active_version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer_id: str
    plan_id: str
    plan_version: int
    status: str
    start_at: datetime
    end_at: datetime | None
    overrides: Mapping[str, TypedValue] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True, slots=True)
class Effective:
    """One effective value of a subscription and where it came from."""

    value: TypedValue
    source: str  # "PLAN" | "OVERRIDE"


def effective_values(version: PlanVersion, overrides: Mapping[str, TypedValue]) -> list[Effective]:
    out: list[Effective] = []
    for v in version.values:
        o = overrides.get(v.feature_reference)
        out.append(Effective(o, "OVERRIDE") if o is not None else Effective(v, "PLAN"))
    planned = {v.feature_reference for v in version.values}
    for ref in sorted(overrides):
        if ref not in planned:
            out.append(Effective(overrides[ref], "OVERRIDE"))
    return out


def same_values(a: Sequence[TypedValue], b: Sequence[TypedValue]) -> bool:
    """Whether two value lists say the same thing (order-insensitive; plans as code)."""

    def key(vs: Sequence[TypedValue]) -> dict[str, Mapping[str, object]]:
        return {v.feature_reference: dict(v.data) for v in vs}

    return key(a) == key(b)
