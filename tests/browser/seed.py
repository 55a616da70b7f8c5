"""Realistic data for the console's browser tests and screenshots, written through the public
API of a running server (``allotment serve`` on a test clock standing at :data:`NOW`).

Eight customers of a small AI product on three plans, November's usage of the example config's
two meters (``tokens_total``, ``api_requests_total``), a top-up grant, an override, a subject
that is no customer with its own metered entitlement, and notification rules with deliveries.
Everything is derived from a fixed random seed, and :class:`Seeded` keeps the expected numbers
(usage per customer, meter and day) the tests compare the charts with.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

NOW = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
"""The test clock: the servers stand still here."""
PERIOD_START = datetime(2026, 11, 1, tzinfo=UTC)
"""Where every subscription starts (its budgets' anchor): the month's first day."""
TOKENS = "tokens_total"
REQUESTS = "api_requests_total"
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-5-haiku")
ROUTES = ("/v1/chat", "/v1/embeddings", "/v1/files")


@dataclass(frozen=True)
class CustomerSeed:
    key: str
    name: str
    email: str
    subjects: tuple[str, ...]
    plan: str
    tokens_per_day: int
    """About this many tokens a day (±40 %), spread over its subjects."""
    requests_per_day: int


CUSTOMERS = (
    CustomerSeed("acme", "Acme Corp", "billing@acme.example", ("acme-web", "acme-batch"),
                 "pro", 260_000, 24),
    CustomerSeed("globex", "Globex Corporation", "ops@globex.example", ("globex-prod",),
                 "enterprise", 900_000, 40),
    CustomerSeed("initech", "Initech", "it@initech.example", ("initech-app",),
                 "starter", 45_000, 12),
    CustomerSeed("umbrella", "Umbrella Health", "platform@umbrella.example", ("umbrella-api",),
                 "pro", 120_000, 18),
    CustomerSeed("hooli", "Hooli", "dev@hooli.example", ("hooli-search", "hooli-mail"),
                 "pro", 410_000, 30),
    CustomerSeed("stark", "Stark Industries", "jarvis@stark.example", ("stark-lab",),
                 "enterprise", 650_000, 35),
    CustomerSeed("wayne", "Wayne Enterprises", "lucius@wayne.example", ("wayne-rnd",),
                 "starter", 52_000, 8),
    CustomerSeed("wonka", "Wonka Labs", "charlie@wonka.example", ("wonka-bot",),
                 "starter", 20_000, 6),
)  # fmt: skip
TRIAL_SUBJECT = "trial-42"
"""A subject that belongs to no customer, with a subject-owned metered entitlement."""
PLANS: dict[str, dict[str, Any]] = {
    "starter": {"name": "Starter", "monthly_tokens": "1000000", "api_calls": "5000",
                "models": ["gpt-4o-mini", "claude-3-5-haiku"], "priority_support": False,
                "rpm": "60"},
    "pro": {"name": "Pro", "monthly_tokens": "10000000", "api_calls": "50000",
            "models": list(MODELS), "priority_support": True, "rpm": "600"},
    "enterprise": {"name": "Enterprise", "monthly_tokens": "unlimited", "api_calls": "500000",
                   "models": list(MODELS), "priority_support": True, "rpm": "6000"},
}  # fmt: skip
TOP_UP = Decimal(2_000_000)
"""Acme's top-up grant on monthly_tokens (effective on the 10th, for a month)."""


@dataclass
class Seeded:
    """What the seed wrote, and the numbers the console must show."""

    customer_ids: dict[str, str] = field(default_factory=dict)
    """Customer key → id."""
    subscription_ids: dict[str, str] = field(default_factory=dict)
    daily: dict[tuple[str, str], dict[date, Decimal]] = field(default_factory=dict)
    """(customer key or subject, meter) → usage per UTC day of November up to NOW."""
    trial_daily: dict[str, dict[date, Decimal]] = field(default_factory=dict)
    """meter → the trial subject's usage per day."""
    top_up_grant_id: str = ""
    acme_tokens_entitlement: str = ""
    """The id of Acme's monthly_tokens entitlement (its plan's budget, with the top-up)."""
    events: int = 0

    def daily_of(self, meter: str) -> list[dict[date, Decimal]]:
        """Every customer's usage per day of ``meter``."""
        return [days for (_, m), days in self.daily.items() if m == meter]

    def total(self, owner: str, meter: str) -> Decimal:
        return sum(self.daily.get((owner, meter), {}).values(), Decimal(0))


def _ok(r: httpx.Response, *statuses: int) -> Any:
    if r.status_code not in (statuses or (200, 201)):
        raise AssertionError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r.json() if r.content else None


def _features(c: httpx.Client) -> None:
    bodies: list[dict[str, Any]] = [
        {"reference": "monthly_tokens", "name": "Tokens per month", "type": "NUMBER",
         "meter_reference": TOKENS, "usage_period": "MONTH"},
        {"reference": "api_calls", "name": "API calls per month", "type": "NUMBER",
         "meter_reference": REQUESTS, "usage_period": "MONTH"},
        {"reference": "available_models", "name": "Available models", "type": "ENUM",
         "enum_values": list(MODELS)},
        {"reference": "priority_support", "name": "Priority support", "type": "SWITCH"},
        {"reference": "requests_per_minute", "name": "Requests per minute", "type": "NUMBER",
         "rate_window": "MINUTE"},
    ]  # fmt: skip
    for body in bodies:
        _ok(c.post("/v1/features", json=body), 201)


def _plan_values(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"feature_reference": "monthly_tokens", "number": plan["monthly_tokens"]},
        {"feature_reference": "api_calls", "number": plan["api_calls"]},
        {"feature_reference": "available_models", "enums": plan["models"]},
        {"feature_reference": "priority_support", "switch": plan["priority_support"]},
        {"feature_reference": "requests_per_minute", "number": plan["rpm"]},
    ]


def _plans(c: httpx.Client) -> None:
    for reference, plan in PLANS.items():
        first = dict(plan)
        if reference == "pro":  # pro has a history: version 1 gave half the tokens
            first["monthly_tokens"] = "5000000"
        body = {"reference": reference, "name": plan["name"], "entitlements": _plan_values(first)}
        _ok(c.post("/v1/pricing-plans", json=body), 201)
        if reference == "pro":
            body = {"entitlements": _plan_values(plan)}
            _ok(c.post(f"/v1/pricing-plans/{reference}/versions", json=body), 201)


def _customers(c: httpx.Client, seeded: Seeded) -> None:
    for cust in CUSTOMERS:
        body = {"reference": cust.key, "name": cust.name, "email": cust.email,
                "subject_keys": list(cust.subjects)}  # fmt: skip
        seeded.customer_ids[cust.key] = _ok(c.post("/v1/customers", json=body), 201)["id"]
        sub = {"customer_reference": cust.key, "pricing_plan_reference": cust.plan,
               "start_at": PERIOD_START.isoformat().replace("+00:00", "Z")}  # fmt: skip
        created = _ok(c.post("/v1/pricing-plan-subscriptions", json=sub), 201)
        seeded.subscription_ids[cust.key] = created["id"]


def _event(subject: str, kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "console-seed",
        "type": kind,
        "subject": subject,
        "time": at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def _usage(rng: random.Random, seeded: Seeded) -> list[dict[str, Any]]:
    """November's events, up to NOW; the expected per-day totals go into ``seeded``."""
    events: list[dict[str, Any]] = []
    owners = [(cust.key, cust.subjects, cust.tokens_per_day, cust.requests_per_day)
              for cust in CUSTOMERS]  # fmt: skip
    owners.append((TRIAL_SUBJECT, (TRIAL_SUBJECT,), 6_000, 4))
    for owner, subjects, tokens_per_day, requests_per_day in owners:
        tokens: dict[date, Decimal] = defaultdict(Decimal)
        requests: dict[date, Decimal] = defaultdict(Decimal)
        day = PERIOD_START
        while day < NOW:
            weekend = day.weekday() >= 5
            scale = Decimal("0.45") if weekend else Decimal(1)
            calls = max(1, int(requests_per_day * float(scale) * rng.uniform(0.6, 1.4)))
            budget = int(tokens_per_day * scale * Decimal(str(round(rng.uniform(0.6, 1.4), 2))))
            hours = 24 if day.date() < NOW.date() else NOW.hour
            for n in range(calls):
                at = day + timedelta(seconds=rng.randrange(hours * 3600))
                subject = subjects[n % len(subjects)]
                route = ROUTES[0] if rng.random() < 0.7 else rng.choice(ROUTES[1:])
                method = "POST" if route != "/v1/files" or rng.random() < 0.5 else "GET"
                events.append(_event(subject, "request", at, {"method": method, "route": route}))
                requests[at.date()] += 1
                amount = budget // calls
                if route == "/v1/chat" and amount > 0:
                    model = rng.choice(MODELS)
                    inp = amount * 2 // 3
                    for kind, n_tokens in (("input", inp), ("output", amount - inp)):
                        data = {"tokens": n_tokens, "model": model, "type": kind}
                        events.append(_event(subject, "prompt", at, data))
                        tokens[at.date()] += n_tokens
            day += timedelta(days=1)
        if owner == TRIAL_SUBJECT:
            seeded.trial_daily = {TOKENS: dict(tokens), REQUESTS: dict(requests)}
        else:
            seeded.daily[(owner, TOKENS)] = dict(tokens)
            seeded.daily[(owner, REQUESTS)] = dict(requests)
    return events


def _ingest(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    batch = 500
    for start in range(0, len(events), batch):
        r = c.post(
            "/api/v1/events",
            json=events[start : start + batch],
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        _ok(r, 204)


def _grants_and_overrides(c: httpx.Client, seeded: Seeded) -> None:
    acme = seeded.customer_ids["acme"]
    grant = {
        "amount": int(TOP_UP),
        "priority": 1,
        "effectiveAt": "2026-11-10T09:00:00Z",
        "expiration": {"duration": "MONTH", "count": 1},
        "metadata": {"reason": "launch week top-up"},
    }
    path = f"/api/v2/customers/{acme}/entitlements/monthly_tokens/grants"
    created = _ok(c.post(path, json=grant), 201)
    seeded.top_up_grant_id = created["id"]
    seeded.acme_tokens_entitlement = created["entitlementId"]
    # Hooli negotiated more API calls than Pro gives
    body = {"entitlements": [
        {"feature_reference": "api_calls", "number": "80000", "override": True}
    ]}  # fmt: skip
    _ok(c.patch(f"/v1/pricing-plan-subscriptions/{seeded.subscription_ids['hooli']}", json=body))
    # a subject that is no customer, with its own metered entitlement and a grant
    trial = {"type": "metered", "featureKey": "monthly_tokens", "issueAfterReset": 100000,
             "measureUsageFrom": "2026-11-01T00:00:00Z",
             "usagePeriod": {"interval": "MONTH", "anchor": "2026-11-01T00:00:00Z"}}  # fmt: skip
    _ok(c.post(f"/api/v1/subjects/{TRIAL_SUBJECT}/entitlements", json=trial), 201)
    extra = {"amount": 25000, "priority": 2, "effectiveAt": "2026-11-05T00:00:00Z",
             "expiration": {"duration": "WEEK", "count": 4}}  # fmt: skip
    _ok(c.post(f"/api/v1/subjects/{TRIAL_SUBJECT}/entitlements/monthly_tokens/grants",
               json=extra), 201)  # fmt: skip


def notification_rules(c: httpx.Client, receiver_url: str) -> None:
    """A webhook channel (``receiver_url``) and two rules on the customers' token budgets."""
    channel = {"type": "WEBHOOK", "name": "ops webhook", "url": receiver_url}
    channel_id = _ok(c.post("/api/v1/notification/channels", json=channel), 201)["id"]
    rule = {"type": "entitlements.balance.threshold", "name": "token budget",
            "channels": [channel_id], "features": ["monthly_tokens"],
            "thresholds": [{"type": "usage_percentage", "value": 50},
                           {"type": "usage_percentage", "value": 80},
                           {"type": "usage_percentage", "value": 100}]}  # fmt: skip
    _ok(c.post("/api/v1/notification/rules", json=rule), 201)
    reset = {"type": "entitlements.reset", "name": "new period", "channels": [channel_id]}
    _ok(c.post("/api/v1/notification/rules", json=reset), 201)


def seed(c: httpx.Client, receiver_url: str | None = None) -> Seeded:
    """Write everything through ``c`` (a client of a server standing at :data:`NOW`, with the
    example config's meters and, when it has keys, an admin key header)."""
    seeded = Seeded()
    rng = random.Random(20261120)
    _features(c)
    if receiver_url is not None:
        notification_rules(c, receiver_url)
    _plans(c)
    _customers(c, seeded)
    events = _usage(rng, seeded)
    seeded.events = len(events)
    _ingest(c, events)
    _grants_and_overrides(c, seeded)
    return seeded
