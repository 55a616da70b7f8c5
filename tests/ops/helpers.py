"""Small clients for the operations tests: batches with known totals, and meter read-backs."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx

BATCH_CT = {"content-type": "application/cloudevents-batch+json"}


def batch_events(subject: str, batch_id: str, k: int) -> list[dict[str, Any]]:
    """One batch with a fingerprint: ``k`` prompt events (tokens 1..k, model=batch_id) and ``k``
    request events (route=batch_id). Whole: tokens k(k+1)/2 and k requests; absent: 0 and 0;
    anything else is a partial or doubled batch."""
    events: list[dict[str, Any]] = []
    for j in range(1, k + 1):
        events.append(
            {
                "specversion": "1.0",
                "id": f"{batch_id}-p{j}",
                "source": "ops-test",
                "type": "prompt",
                "subject": subject,
                "data": {"tokens": j, "model": batch_id, "type": "in"},
            }
        )
        events.append(
            {
                "specversion": "1.0",
                "id": f"{batch_id}-r{j}",
                "source": "ops-test",
                "type": "request",
                "subject": subject,
                "data": {"method": "POST", "route": batch_id},
            }
        )
    return events


def whole(k: int) -> tuple[Decimal, Decimal]:
    return Decimal(k * (k + 1) // 2), Decimal(k)


def post_batch(c: httpx.Client, events: list[dict[str, Any]]) -> httpx.Response:
    return c.post("/api/v1/events", content=json.dumps(events), headers=BATCH_CT)


def meter_by_group(c: httpx.Client, meter: str, subject: str, group: str) -> dict[str, Decimal]:
    r = c.get(f"/api/v1/meters/{meter}/query", params={"subject": subject, "groupBy": group})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    out: dict[str, Decimal] = {}
    for row in json.loads(r.text, parse_float=Decimal)["data"]:
        key = row["groupBy"][group]
        assert key not in out, f"two rows for {group}={key}"
        out[key] = Decimal(row["value"])
    return out


def batches_seen(c: httpx.Client, subject: str) -> dict[str, tuple[Decimal, Decimal]]:
    """Per batch id: (token sum, request count) as the meters see them."""
    tokens = meter_by_group(c, "tokens_total", subject, "model")
    requests = meter_by_group(c, "api_requests_total", subject, "route")
    zero = Decimal(0)
    return {b: (tokens.get(b, zero), requests.get(b, zero)) for b in set(tokens) | set(requests)}


def meter_total(c: httpx.Client, meter: str, subject: str) -> Decimal:
    r = c.get(f"/api/v1/meters/{meter}/query", params={"subject": subject})
    assert r.status_code == 200, r.text
    return sum(
        (Decimal(row["value"]) for row in json.loads(r.text, parse_float=Decimal)["data"]),
        Decimal(0),
    )
