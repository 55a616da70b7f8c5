"""An inline decision (SQLite's event loop) starts from the customer's cached subscription
view without reading the catalog version, and checks that version in the budgets' read: a
catalog write between two decisions — a plan change, an override, the customer's deletion —
is in the second one's answer. Real storage and the real catalog, through the fast path (on
PostgreSQL the same calls go through the route)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.http.app import create_app
from allotment.storage import usage_marks
from allotment.storage.database import open_database
from allotment.storage.decision_checks import ReadChanged
from tests.api.test_authorize_fast_path import T0, _setup

PATH = "/v1/customers/acme/authorize"


def _body(model: str) -> bytes:
    return json.dumps(
        {
            "checks": [{"feature_reference": "models", "value": model}],
            "reserve": [{"feature_reference": "tokens", "amount": "1", "ttl_seconds": 60}],
        }
    ).encode()


@pytest.fixture
def container(new_db_url: Callable[[], str]) -> Iterator[Container]:
    url = new_db_url()
    c = Container(Settings(db_url=url), open_database(url), FrozenClock(T0))
    c.start()
    try:
        yield c
    finally:
        c.close()


def test_a_catalog_write_between_two_decisions_is_seen(container: Container) -> None:
    async def run() -> list[Any]:
        seen: list[Any] = []
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            await _setup(c)

            async def authorize(model: str) -> None:
                r = await c.post(
                    PATH, content=_body(model), headers={"content-type": "application/json"}
                )
                seen.append((model, r.status_code, r.json().get("code")))

            for _ in range(3):  # warm: the view and the budget memo are cached
                await authorize("large")
            subs = (await c.get("/v1/pricing-plan-subscriptions?customer_reference=acme")).json()
            sub = subs["data"][0]["id"]
            moved = await c.patch(
                f"/v1/pricing-plan-subscriptions/{sub}", json={"pricing_plan_reference": "pro"}
            )
            assert moved.status_code == 200, moved.text
            await authorize("large")  # pro includes it
            await authorize("large")
            overridden = await c.patch(
                f"/v1/pricing-plan-subscriptions/{sub}",
                json={"entitlements": [{"feature_reference": "models", "enums": ["small"]}]},
            )
            assert overridden.status_code == 200, overridden.text
            await authorize("large")  # the override takes it away again
            await authorize("small")
            cancelled = await c.delete(f"/v1/pricing-plan-subscriptions/{sub}")
            assert cancelled.status_code in (200, 204), cancelled.text
            await authorize("small")  # no subscription: not entitled
        return seen

    seen = asyncio.run(run())
    assert [(m, s) for m, s, _ in seen] == [
        ("large", 403),
        ("large", 403),
        ("large", 403),
        ("large", 200),
        ("large", 200),
        ("large", 403),
        ("small", 200),
        ("small", 403),
    ]
    assert seen[0][2] == "ENUM_VALUE_NOT_ALLOWED"
    assert seen[-1][2] == "NOT_ENTITLED"


def test_a_reference_that_names_another_customer_since(container: Container) -> None:
    """The customer deleted and another one created under its reference between two
    decisions: the second decides for (and holds under the keys of) the new customer, not the
    cached one (PostgreSQL sends the cached view's check with the keys it took for the cached
    customer: it finds the view gone and starts again)."""

    async def run() -> list[int]:
        statuses = []
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            await _setup(c)

            async def authorize() -> None:
                r = await c.post(
                    PATH, content=_body("small"), headers={"content-type": "application/json"}
                )
                statuses.append(r.status_code)

            for _ in range(3):  # warm: the view and the budget memo are cached
                await authorize()
            subs = (await c.get("/v1/pricing-plan-subscriptions?customer_reference=acme")).json()
            cancelled = await c.delete(f"/v1/pricing-plan-subscriptions/{subs['data'][0]['id']}")
            assert cancelled.status_code in (200, 204), cancelled.text
            deleted = await c.delete("/v1/customers/acme")
            assert deleted.status_code in (200, 204), deleted.text
            made = await c.post("/v1/customers", json={"reference": "acme", "name": "Acme 2"})
            assert made.status_code == 201, made.text
            sub = await c.post(
                "/v1/pricing-plan-subscriptions",
                json={"customer_reference": "acme", "pricing_plan_reference": "starter"},
            )
            assert sub.status_code == 201, sub.text
            await authorize()
        return statuses

    first = container.enforcement
    assert asyncio.run(run()) == [200, 200, 200, 200]
    assert first.held_for_customer("acme") == {"tokens": 1}


def test_a_change_committed_before_the_decisions_commit_is_seen(container: Container) -> None:
    """SQLite: the inline decision answers from the memo and leaves its one check to the
    group writer, which runs it inside the decision's write transaction. A catalog write
    that commits after the decision was made but before the writer's transaction: the check
    finds it, the decision is not written, and the call is decided again the long way —
    one reservation, not two. The next decision checks on the loop before it decides."""
    store = container.enforcement._store
    if not store.inline:
        pytest.skip("SQLite: the group writer")
    submitted = threading.Event()
    refused: list[BaseException | None] = []
    submit, write = store.submit, store._batcher._write  # observed, not replaced

    def observed_submit(writes: Any, done: Callable[[BaseException | None], None]) -> None:
        submit(writes, done)
        submitted.set()

    def observed_write(tx: Any, items: list[Any]) -> Any:
        out = write(tx, items)
        refused.extend(e for e in out or () if e is not None)
        return out

    async def run() -> list[int]:
        statuses = []
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            await _setup(c)

            async def authorize() -> None:
                r = await c.post(
                    PATH, content=_body("small"), headers={"content-type": "application/json"}
                )
                statuses.append(r.status_code)

            for _ in range(3):  # warm: the view and the budget memo are cached
                await authorize()
            store.submit, store._batcher._write = observed_submit, observed_write
            with container.db.write() as tx:  # the writer waits for this transaction
                call = asyncio.create_task(authorize())
                while not submitted.is_set():  # decided on the loop, queued for the writer
                    await asyncio.sleep(0.001)
                usage_marks.bump_catalog(tx)  # a feature changed: the memo no longer holds
            await call
            # after a refusal the next decision checks on the loop first (it holds now: the
            # long way refreshed the memo), then decides as before
            assert container.enforcement._check_first
            await authorize()
            assert not container.enforcement._check_first
        return statuses

    assert asyncio.run(run()) == [200, 200, 200, 200, 200]
    assert len(refused) == 1
    assert isinstance(refused[0], ReadChanged)
    assert container.enforcement.held_for_customer("acme") == {"tokens": 5}


def test_usage_ingested_between_two_decisions_is_in_the_second(container: Container) -> None:
    """The inline decisions keep their answer while the view and the budget's memo are the
    same objects; usage ingested between two decisions refreshes the memo, so the second
    decision answers from the new balance (and the one after it too, inline again)."""

    async def run() -> list[str]:
        remaining = []
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            await _setup(c)

            async def authorize() -> None:
                r = await c.post(
                    PATH, content=_body("small"), headers={"content-type": "application/json"}
                )
                assert r.status_code == 200, r.text
                remaining.append(r.json()["remaining"]["tokens"])

            clock = container.clock
            assert isinstance(clock, FrozenClock)
            clock.advance(timedelta(seconds=30))  # usage counts from the period's start on
            for _ in range(3):  # warm: the view and the budget memo are cached
                await authorize()
            event = {"specversion": "1.0", "id": "u1", "source": "t", "type": "tok",
                     "subject": "acme", "time": "2026-12-03T08:00:05Z",
                     "data": {"tokens": 100}}  # fmt: skip
            r = await c.post(
                "/api/v1/events",
                content=json.dumps(event),
                headers={"content-type": "application/cloudevents+json"},
            )
            assert r.status_code in (200, 202, 204), r.text
            await authorize()
            await authorize()
        return remaining

    # 1 000 tokens, 1 held per call; the 100 ingested count from the fourth call on
    assert asyncio.run(run()) == ["999", "998", "997", "896", "895"]
