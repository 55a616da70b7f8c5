"""Authorize cost (issue 17): POST /v1/customers/{ref}/authorize with one check, one consume
and one reserve, beside a naive reference that counts and sums raw rows.

Ours: a catalog made over the public API on the data set's server — a rate limit (600 per
MINUTE, the guide's Pro), a token budget on the data set's meter (large enough never to
refuse), model tiers (ENUM) — on one plan, and one customer for each of the first 20 data-set
subjects (reference = subject, so the subject's events are its usage). Each call checks a
model, consumes one request and reserves 1 token (TTL 300 s), cycling over the customers.

Naive (bench/refapp.py ``POST /naive/authorize/{subject}``): what an application writes by
hand, exact only because it serialises per customer — in one transaction: COUNT the
customer's request rows of the last minute, SUM its token events of the data set's period
from the raw events table, SUM its held reservation rows, then INSERT a request row and a
reservation row.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from bench.httpc import Conn, HttpError

RATE_LIMIT = 600
BUDGET = 10**12


def setup(base_url: str, meter_slug: str, customers: list[str]) -> dict[str, str]:
    """Features and a plan named for this run, every customer (re)subscribed to it."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "rate": f"bench_rpm_{tag}",
        "budget": f"bench_tokens_{tag}",
        "models": f"bench_models_{tag}",
    }
    c = Conn(base_url)
    try:
        c.json(
            "POST",
            "/v1/features",
            {"reference": names["rate"], "name": "rpm", "type": "NUMBER", "rate_window": "MINUTE"},
        )
        c.json(
            "POST",
            "/v1/features",
            {
                "reference": names["budget"],
                "name": "tokens",
                "type": "NUMBER",
                "meter_reference": meter_slug,
            },
        )
        c.json(
            "POST",
            "/v1/features",
            {
                "reference": names["models"],
                "name": "models",
                "type": "ENUM",
                "enum_values": ["small", "large"],
            },
        )
        plan = f"bench_plan_{tag}"
        c.json(
            "POST",
            "/v1/pricing-plans",
            {
                "reference": plan,
                "name": "bench",
                "entitlements": [
                    {"feature_reference": names["rate"], "number": str(RATE_LIMIT)},
                    {"feature_reference": names["budget"], "number": str(BUDGET)},
                    {"feature_reference": names["models"], "enums": ["small", "large"]},
                ],
            },
        )
        for ref in customers:
            c.json("POST", "/v1/customers", {"reference": ref, "name": ref}, expect=(201, 409))
            listed: Any = c.json("GET", f"/v1/pricing-plan-subscriptions?customer_reference={ref}")
            for sub in listed["data"]:
                if sub["status"] == "ACTIVE":
                    c.json(
                        "DELETE", f"/v1/pricing-plan-subscriptions/{sub['id']}", expect=(200, 204)
                    )
            c.json(
                "POST",
                "/v1/pricing-plan-subscriptions",
                {"customer_reference": ref, "pricing_plan_reference": plan},
            )
    finally:
        c.close()
    return names


def body(names: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "checks": [{"feature_reference": names["models"], "value": "small"}],
            "consume": [{"feature_reference": names["rate"]}],
            "reserve": [{"feature_reference": names["budget"], "amount": 1, "ttl_seconds": 300}],
        }
    ).encode()


def check(base_url: str, path: str, payload: bytes) -> None:
    c = Conn(base_url)
    try:
        status, data = c.request("POST", path, payload, "application/json")
    finally:
        c.close()
    if status != 200:
        raise HttpError(f"POST {path} -> {status}: {data[:300]!r}")
