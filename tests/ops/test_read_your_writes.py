"""Read-your-writes under load (issue 18): an acknowledged event counts at once.

One client ingests into its own subject — batches through the route, single events through
the ASGI fast path, retries of ids already sent, late events — and after every 204 reads, on
the same server and at once, the entitlement value, the entitlement history and the meter
query; each must count every acknowledged event exactly once. Meanwhile other clients keep
ingesting into other subjects of the same meter (the same group commits, rollup tables and
usage marks). A real server process on each engine; exact Decimal comparisons."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support import ServerProcess, unique

NOW = "2024-03-01T12:00:00Z"
DAY = "2024-03-01T00:00:00Z"
BATCH = {"content-type": "application/cloudevents-batch+json"}
SINGLE = {"content-type": "application/cloudevents+json"}
ROUNDS = 60
LOADERS = 3


def _ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return json.loads(r.text, parse_float=Decimal) if r.content else None


def _event(slug: str, subject: str, eid: str, minute: int, value: Decimal) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": eid,
        "source": "ryw",
        "type": slug,
        "subject": subject,
        "time": f"2024-03-01T{minute // 60:02d}:{minute % 60:02d}:30Z",
        "data": {"value": str(value)},
    }


def _setup(c: httpx.Client, slug: str, subject: str) -> str:
    _ok(
        c.post(
            "/api/v1/meters",
            json={
                "slug": slug,
                "aggregation": "SUM",
                "eventType": slug,
                "valueProperty": "$.value",
            },
        )
    )
    key = _ok(
        c.post("/api/v1/features", json={"key": unique("f"), "name": "F", "meterSlug": slug}), 201
    )["key"]
    _ok(
        c.post(
            f"/api/v1/subjects/{subject}/entitlements",
            json={
                "type": "metered",
                "featureKey": key,
                "measureUsageFrom": DAY,
                "usagePeriod": {"interval": "DAY", "anchor": DAY},
            },
        ),
        201,
    )
    base = f"/api/v1/subjects/{subject}/entitlements/{key}"
    grant = {
        "amount": 1_000_000,
        "effectiveAt": DAY,
        "expiration": {"duration": "YEAR", "count": 1},
    }
    _ok(c.post(base + "/grants", json=grant), 201)
    return base


def _reads(c: httpx.Client, slug: str, subject: str, base: str) -> tuple[Decimal, ...]:
    value = _ok(c.get(base + "/value"))
    history = _ok(c.get(base + "/history", params={"windowSize": "HOUR", "from": DAY, "to": NOW}))
    query = _ok(
        c.get(
            f"/api/v1/meters/{slug}/query",
            params={"subject": subject, "from": DAY, "to": NOW, "windowSize": "HOUR"},
        )
    )
    return (
        Decimal(value["usage"]),
        sum((Decimal(w["usage"]) for w in history["windowedHistory"]), Decimal(0)),
        sum((Decimal(row["value"]) for row in query["data"]), Decimal(0)),
    )


@pytest.mark.slow
def test_every_acknowledged_event_is_counted_by_the_very_next_read(
    db_url: str, make_server: Callable[..., ServerProcess]
) -> None:
    srv = make_server(db_url=db_url, env={"ALLOTMENT_TEST_CLOCK": NOW})
    slug = unique("ryw")
    subject = unique("s")
    stop = threading.Event()
    errors: list[str] = []
    loaded = [0] * LOADERS

    def load(n: int) -> None:  # other clients: other subjects, the same meter
        rng = random.Random(n)
        with srv.client() as c:
            i = 0
            while not stop.is_set():
                events = [
                    _event(
                        slug, f"{subject}-other{n}", f"o{n}-{i}-{j}", rng.randrange(720), Decimal(j)
                    )
                    for j in range(rng.choice([1, 50, 200]))
                ]
                i += 1
                r = c.post("/api/v1/events", content=json.dumps(events), headers=BATCH)
                if r.status_code != 204:
                    errors.append(f"load {r.status_code} {r.text[:200]}")
                    return
                loaded[n] += len(events)

    with srv.client() as c:
        base = _setup(c, slug, subject)
        threads = [threading.Thread(target=load, args=(n,)) for n in range(LOADERS)]
        for t in threads:
            t.start()
        try:
            rng = random.Random(18)
            total = Decimal(0)
            sent: list[dict[str, Any]] = []
            for step in range(ROUNDS):
                kind = step % 4
                if kind == 3 and sent:  # a retry of ids already counted: changes nothing
                    events = rng.sample(sent, min(len(sent), 3))
                else:
                    events = [
                        _event(
                            slug,
                            subject,
                            f"me-{step}-{j}",
                            rng.randrange(720),  # any minute of the day so far: late events too
                            Decimal(rng.randrange(1, 10_000)) / 100,
                        )
                        for j in range(1 if kind == 0 else rng.randrange(2, 40))
                    ]
                    total += sum((Decimal(e["data"]["value"]) for e in events), Decimal(0))
                    sent += events
                if len(events) == 1:
                    r = c.post("/api/v1/events", content=json.dumps(events[0]), headers=SINGLE)
                else:
                    r = c.post("/api/v1/events", content=json.dumps(events), headers=BATCH)
                assert r.status_code == 204, r.text
                assert _reads(c, slug, subject, base) == (total, total, total), step
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert not errors, errors[:3]
    assert min(loaded) > 0, "every loader ingested while the reads ran"
