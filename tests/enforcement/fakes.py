"""An in-memory stand-in for the catalog port (what a customer is entitled to), for the
service tests that run on real storage before and beside the catalog. Its budget balance is
allowance − the usage events recorded through it (deduplicated by id, like ingest)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from allotment.domain.enforcement import Budget, CustomerEntitlements, Entitled
from allotment.domain.errors import NotFound
from allotment.domain.events import CloudEvent


@dataclass
class FakeCatalog:
    plans: dict[str, dict[str, Entitled]] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)  # ref -> plan
    allowance: dict[str, Decimal] = field(default_factory=dict)  # feature -> per customer
    usage: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    events: dict[tuple[str, str], CloudEvent] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    uncached: bool = False
    """``cached_customer_entitlements`` answers ``None`` (values that need computing)."""

    def customer_entitlements(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str] | None = None,
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> CustomerEntitlements:
        plan = self.customers.get(customer_ref)
        if plan is None:
            raise NotFound(f"customer {customer_ref!r} not found")
        values = {}
        for ref, v in self.plans[plan].items():
            if v.budget is not None and v.number is not None:
                used = self.usage.get((customer_ref, v.budget.event_type), Decimal(0))
                v = replace(v, budget=replace(v.budget, balance=v.number - used, usage=used))
            values[ref] = v
        return CustomerEntitlements(f"id-{customer_ref}", customer_ref, plan, values)

    def cached_customer_entitlements(self, customer_ref: str, **kw: Any) -> Any:
        """The same answer (everything is in memory), or ``None`` when ``uncached``."""
        return None if self.uncached else self.customer_entitlements(customer_ref, **kw)

    def identify(self, customer_ref: str) -> tuple[str, str]:
        if customer_ref not in self.customers:
            raise NotFound(f"customer {customer_ref!r} not found")
        return f"id-{customer_ref}", customer_ref

    def identify_cached(self, customer_ref: str) -> tuple[str, str] | None:
        return None  # nothing cached: identify reads

    def entitlements_ahead(self, customer_ref: str, **kw: Any) -> Any:
        return None  # nothing cached: no read to send ahead

    def entitlements_unchecked(self, customer_ref: str, **kw: Any) -> Any:
        return self.cached_customer_entitlements(customer_ref, **kw), None  # nothing to check

    def plans_including(self, feature_reference: str, value: str) -> Sequence[str]:
        return sorted(
            p
            for p, values in self.plans.items()
            if feature_reference in values and value in values[feature_reference].enums
        )

    def ingest(self, events: Sequence[CloudEvent]) -> int:
        stored = 0
        with self._lock:
            for e in events:
                if (e.source, e.id) in self.events:
                    continue
                self.events[(e.source, e.id)] = e
                amount = Decimal(str((e.data or {})["tokens"]))
                key = (e.subject, e.type)
                self.usage[key] = self.usage.get(key, Decimal(0)) + amount
                stored += 1
        return stored


def budget(event_type: str = "tokens", soft: bool = False) -> Budget:
    return Budget(Decimal(0), Decimal(0), soft, event_type, "$.tokens")


def standard() -> FakeCatalog:
    """The guide's plans: starter and pro."""
    models = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-5-haiku")
    cat = FakeCatalog()
    cat.plans["starter"] = {
        "requests_per_minute": Entitled(
            "requests_per_minute", "NUMBER", Decimal(3), rate_window="MINUTE"
        ),
        "monthly_token_budget": Entitled(
            "monthly_token_budget", "NUMBER", Decimal(1000), budget=budget()
        ),
        "available_models": Entitled("available_models", "ENUM", enums=models[1::2]),
        "priority_queue": Entitled("priority_queue", "SWITCH", switch=False),
    }
    cat.plans["pro"] = {
        "requests_per_minute": Entitled(
            "requests_per_minute", "NUMBER", None, unlimited=True, rate_window="MINUTE"
        ),
        "monthly_token_budget": Entitled(
            "monthly_token_budget", "NUMBER", Decimal(100), budget=budget(soft=True)
        ),
        "available_models": Entitled("available_models", "ENUM", enums=models),
        "priority_queue": Entitled("priority_queue", "SWITCH", switch=True),
        "max_file_mb": Entitled("max_file_mb", "NUMBER", Decimal(10)),
    }
    cat.customers["acme"] = "starter"
    cat.customers["big"] = "pro"
    return cat
