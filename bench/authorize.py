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

Interleaved (:func:`interleaved`): the scale figure (p50 at the largest data set ÷ p50 at the
smallest) compares two data sets' latency, so both are measured in the same minutes — both
servers up, short rounds alternating between them (ABBA order) — instead of in cells minutes
apart, where a swing of the shared machine's load lands in the ratio (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class Side:
    """One data set's server and the authorize calls sent to it, cycled in order."""

    base_url: str
    paths: list[str]
    payload: bytes
    clocks: dict[str, Callable[[], float]] = field(default_factory=dict)
    """CPU clocks read between rounds (seconds so far: the server's process, its database's
    backends...): what each advanced over the side's rounds is :attr:`spent`."""
    rounds_us: list[list[float]] = field(default_factory=list)
    """Each round's latencies (µs), as the client sees them."""
    bad: int = 0
    """Answers other than 200."""
    spent: dict[str, float] = field(default_factory=dict)
    """Per clock, the seconds it advanced over the side's rounds (warm-up not counted)."""


def interleaved(sides: Sequence[Side], rounds: int, per_round: int, warm: int = 0) -> None:
    """``rounds`` rounds of ``per_round`` calls on each side, one keep-alive client per side,
    one request at a time; the sides' order alternates (A B, B A, A B, ...) so that each
    round of one side is next to a round of every other. ``warm`` calls per side first (not
    kept). Fills each side's :attr:`Side.rounds_us`, :attr:`Side.bad` and :attr:`Side.spent`
    (its clocks read between rounds, outside the timed calls)."""
    conns = [Conn(s.base_url) for s in sides]
    try:
        reqs = [
            [c.prepare("POST", p, s.payload, "application/json") for p in s.paths]
            for c, s in zip(conns, sides, strict=True)
        ]
        at = [0] * len(sides)
        clock = time.perf_counter_ns

        def one(i: int) -> float:
            r = reqs[i][at[i] % len(reqs[i])]
            at[i] += 1
            t = clock()
            status, _ = conns[i].send_raw(r)
            done = clock()
            sides[i].bad += status != 200
            return (done - t) / 1000

        for i in range(len(sides)):
            for _ in range(warm):
                one(i)
            sides[i].bad = 0
        order = list(range(len(sides)))
        for n in range(rounds):
            for i in order if n % 2 == 0 else order[::-1]:
                side = sides[i]
                before = {k: read() for k, read in side.clocks.items()}
                side.rounds_us.append([one(i) for _ in range(per_round)])
                for k, read in side.clocks.items():
                    side.spent[k] = side.spent.get(k, 0.0) + read() - before[k]
    finally:
        for c in conns:
            c.close()
