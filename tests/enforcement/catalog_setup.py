"""The seed guide's catalog built over HTTP on a real server, named uniquely per test: a
token meter, a rate limit, a token budget, model tiers and a priority switch on two plans,
and a customer subscribed to the first. Shared by the API, ops, client and middleware tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.support import unique

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-5-haiku"]


def _ok(r: httpx.Response, status: int = 201) -> Any:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    return r.json()


@dataclass(frozen=True)
class Guide:
    customer: str
    subscription_id: str
    starter: str
    pro: str
    meter: str
    rpm: str
    budget: str
    models: str
    priority: str

    def subscribe(self, c: httpx.Client, plan: str | None = None) -> str:
        """A new customer on ``plan`` (the starter plan by default)."""
        ref = unique("cust").replace("_", "-")
        _ok(c.post("/v1/customers", json={"reference": ref, "name": ref}))
        _ok(
            c.post(
                "/v1/pricing-plan-subscriptions",
                json={"customer_reference": ref, "pricing_plan_reference": plan or self.starter},
            )
        )
        return ref


def build_guide(
    c: httpx.Client,
    *,
    rpm: int | str = 3,
    budget: int | str = 1000,
    pro_rpm: int | str = "unlimited",
    pro_budget: int | str = 100_000,
    rate_window: str = "MINUTE",
) -> Guide:
    meter = unique("tokens")
    r = c.post(
        "/api/v1/meters",
        json={"slug": meter, "aggregation": "SUM", "eventType": meter, "valueProperty": "$.tokens"},
    )
    assert r.status_code in (200, 201), r.text
    names = {k: unique(k) for k in ("rpm", "budget", "models", "priority")}
    _ok(c.post("/v1/features", json={"reference": names["rpm"], "name": "RPM", "type": "NUMBER",
                                      "rate_window": rate_window}))  # fmt: skip
    _ok(c.post("/v1/features", json={"reference": names["budget"], "name": "Tokens",
                                      "type": "NUMBER", "meter_reference": meter}))  # fmt: skip
    _ok(c.post("/v1/features", json={"reference": names["models"], "name": "Models",
                                      "type": "ENUM", "enum_values": MODELS}))  # fmt: skip
    _ok(c.post("/v1/features", json={"reference": names["priority"], "name": "Priority",
                                      "type": "SWITCH"}))  # fmt: skip
    plans = {}
    for tier, values in (
        ("starter", (rpm, budget, ["gpt-4o-mini", "claude-3-5-haiku"], False)),
        ("pro", (pro_rpm, pro_budget, MODELS, True)),
    ):
        ref = unique(tier)
        _ok(
            c.post(
                "/v1/pricing-plans",
                json={
                    "reference": ref,
                    "name": tier,
                    "entitlements": [
                        {"feature_reference": names["rpm"], "number": str(values[0])},
                        {"feature_reference": names["budget"], "number": str(values[1])},
                        {"feature_reference": names["models"], "enums": values[2]},
                        {"feature_reference": names["priority"], "switch": values[3]},
                    ],
                },
            )
        )
        plans[tier] = ref
    customer = unique("acme").replace("_", "-")
    _ok(c.post("/v1/customers", json={"reference": customer, "name": "Acme"}))
    sub = _ok(
        c.post(
            "/v1/pricing-plan-subscriptions",
            json={"customer_reference": customer, "pricing_plan_reference": plans["starter"]},
        )
    )
    return Guide(
        customer,
        sub["id"],
        plans["starter"],
        plans["pro"],
        meter,
        names["rpm"],
        names["budget"],
        names["models"],
        names["priority"],
    )
