"""The one call of the `/v1` catalog, ``GET /v1/customers/{ref}/entitlements`` (catalog.md §5),
in process, beside its naive reference (docs/benchmarks.md, "The one call").

Data set (deterministic): three meters (``cat_tokens`` SUM, ``cat_requests`` COUNT,
``cat_images`` SUM), ten features — three budgets (one per meter, MONTH), a rate limit, a plain
number, two ENUMs, two SWITCHes, an AMOUNT — one plan with a value for each, and 100 customers
subscribed to it from the window's start, each with its key and one subject key. Events spread
over the customers (``cat-000`` gets a fifth of them) and the three meters, over the main data
set's window (October 2026); the clock is frozen at its end, as for the rest of the run. The
naive reference keeps the same events raw (JSON payload, index on subject, type, time) and
answers with the plan's values held in memory plus **one** SQL aggregate over the customer's
raw events of the period (``GROUP BY type``).

    ours   container.subscriptions.entitlements(ref)   (what the route renders)
    naive  plan values in memory + one SUM … GROUP BY type over raw events
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from bench import data as D

T0 = D.T0  # the window of the main data set, so the run's frozen clock fits both
T_END = D.T_END
CUSTOMERS = 100
NAIVE = "naive_catalog_events"
METERS = (
    ("cat_tokens", "SUM", "$.tokens"),
    ("cat_requests", "COUNT", None),
    ("cat_images", "SUM", "$.n"),
)
PLAN = "bench_pro"
_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-5-haiku"]
FEATURES: list[dict[str, Any]] = [
    {"reference": "token_budget", "type": "NUMBER", "meter_reference": "cat_tokens"},
    {"reference": "request_budget", "type": "NUMBER", "meter_reference": "cat_requests"},
    {"reference": "image_budget", "type": "NUMBER", "meter_reference": "cat_images"},
    {"reference": "requests_per_minute", "type": "NUMBER", "rate_window": "MINUTE"},
    {"reference": "max_file_mb", "type": "NUMBER"},
    {"reference": "available_models", "type": "ENUM", "enum_values": _MODELS},
    {"reference": "regions", "type": "ENUM", "enum_values": ["eu", "us", "apac"]},
    {"reference": "priority_queue", "type": "SWITCH"},
    {"reference": "beta_models", "type": "SWITCH"},
    {"reference": "credit_allowance", "type": "AMOUNT", "currency": "USD"},
]
VALUES: list[dict[str, Any]] = [
    {"feature_reference": "token_budget", "number": "10000000"},
    {"feature_reference": "request_budget", "number": "100000"},
    {"feature_reference": "image_budget", "number": "5000"},
    {"feature_reference": "requests_per_minute", "number": "600"},
    {"feature_reference": "max_file_mb", "number": "512"},
    {"feature_reference": "available_models", "enums": _MODELS},
    {"feature_reference": "regions", "enums": ["eu", "us"]},
    {"feature_reference": "priority_queue", "switch": True},
    {"feature_reference": "beta_models", "switch": False},
    {"feature_reference": "credit_allowance", "amount": {"value": "25.00"}},
]


def customer(i: int) -> str:
    return f"cat-{i:03d}"


def events(n: int, batch: int) -> Iterator[list[dict[str, Any]]]:
    """Raw CloudEvents dicts, in time order, ``batch`` at a time."""
    rng = random.Random(15)
    span = (T_END - T0) // timedelta(microseconds=1)
    out: list[dict[str, Any]] = []
    for k in range(n):
        c = 0 if rng.random() < 0.2 else rng.randrange(CUSTOMERS)
        subject = customer(c) if k % 2 else customer(c) + "-app"
        slug, _, prop = METERS[k % 3]
        at = T0 + timedelta(microseconds=span * k // n)
        data = {"tokens": rng.randint(1, 1000)} if prop == "$.tokens" else {"n": rng.randint(1, 4)}
        out.append({"specversion": "1.0", "id": f"c{k}", "source": "bench", "type": slug,
                    "subject": subject, "time": at.isoformat().replace("+00:00", "Z"),
                    "data": data})  # fmt: skip
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


def build(container: Any, store: Any, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Create the catalog, customers and subscriptions, load ``n`` events both ways."""
    from allotment.domain.catalog import parse_feature_spec
    from allotment.domain.events import validate_event

    c = container
    for slug, agg, prop in METERS:
        body: dict[str, Any] = {"slug": slug, "aggregation": agg, "eventType": slug}
        if prop:
            body["valueProperty"] = prop
        c.meters.create(body)
    for f in FEATURES:
        c.catalog.create_feature(parse_feature_spec({"name": f["reference"], **f}))
    c.catalog.create_plan({"reference": PLAN, "name": "Pro", "entitlements": VALUES})
    for i in range(CUSTOMERS):
        ref = customer(i)
        c.customers.create({"name": ref, "key": ref,
                            "usageAttribution": {"subjectKeys": [ref + "-app"]}})  # fmt: skip
        c.subscriptions.create({"customer_reference": ref, "pricing_plan_reference": PLAN,
                                "start_at": T0.isoformat()})  # fmt: skip
    store.create_table(NAIVE, jsonb=True, unique=False, index=False)
    t = time.perf_counter()
    stored = 0
    now = T_END + timedelta(minutes=1)
    for chunk in events(n, 10_000):
        stored += c.events.ingest([validate_event(e, "event", now) for e in chunk])
        rows = [(e["source"], e["id"], e["type"], e["subject"],
                 (datetime.fromisoformat(e["time"].replace("Z", "+00:00")) - T0)
                 // timedelta(microseconds=1) + _T0_US, json.dumps(e["data"]))
                for e in chunk]  # fmt: skip
        _insert(store, rows)
        if stored % 100_000 == 0:
            log(f"    catalog data set: {stored:,} / {n:,} events")
    store.create_index(NAIVE)
    return {"events": stored, "customers": CUSTOMERS, "seconds": round(time.perf_counter() - t, 1)}


_T0_US = D.T0_US
_END_US = D.T_END_US


def _insert(store: Any, rows: list[tuple[Any, ...]]) -> None:
    c = store.conn()
    if store.pg:
        with (
            c.transaction(),
            c.cursor().copy(
                f"COPY {NAIVE} (source, id, type, subject, time, data) FROM STDIN"
            ) as cp,
        ):
            for r in rows:
                cp.write_row(r)
    else:
        c.execute("BEGIN IMMEDIATE")
        c.executemany(f"INSERT INTO {NAIVE} VALUES (?,?,?,?,?,?)", rows)
        c.execute("COMMIT")


def naive_call(store: Any) -> Callable[[str], Any]:
    """The plan's values held in memory, and one aggregate over the customer's raw events."""
    values = {v["feature_reference"]: v for v in VALUES}
    budgets = {f["meter_reference"]: f["reference"] for f in FEATURES if f.get("meter_reference")}
    amount = "(data->>'tokens')::numeric" if store.pg else "json_extract(data, '$.tokens')"
    n = "(data->>'n')::numeric" if store.pg else "json_extract(data, '$.n')"
    sql = (
        f"SELECT type, CASE WHEN type = 'cat_requests' THEN count(*) WHEN type = 'cat_tokens' "
        f"THEN sum({amount}) ELSE sum({n}) END FROM {NAIVE} "
        "WHERE subject IN (?, ?) AND type IN ('cat_tokens', 'cat_requests', 'cat_images') "
        "AND time >= ? AND time < ? GROUP BY type"
    )

    def call(ref: str) -> Any:
        used = dict(store.q(sql, (ref, ref + "-app", _T0_US, _END_US)))
        out = []
        for ref_, v in values.items():
            item = dict(v)
            meter = next((m for m, f in budgets.items() if f == ref_), None)
            if meter is not None:
                usage = used.get(meter, 0)
                item["usage"] = str(usage)
                item["remaining"] = str(max(0, int(v["number"]) - int(usage)))
            out.append(item)
        return out

    return call
