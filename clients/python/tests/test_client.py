"""Allotment (sync) and AsyncAllotment against a real server: entitlements with the TTL cache,
authorize and its typed denials, reserve as a context manager, batched ingest with retries
and flush on close, local budget leases."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest
from allotment_client import (
    Allotment,
    AsyncAllotment,
    BudgetExhausted,
    EnumValueNotAllowed,
    LeaseSettings,
    RateLimited,
    SwitchOff,
)
from tests.enforcement.catalog_setup import Guide, build_guide
from tests.support import ServerProcess, unique


@pytest.fixture
def guide(client: httpx.Client) -> Guide:
    return build_guide(client)


class Counting(httpx.BaseTransport):
    """Counts requests per path; fails the first ``fail`` sends with a connection error."""

    def __init__(self, fail: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.fail = fail
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.fail > 0:
            self.fail -= 1
            raise httpx.ConnectError("injected", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def usage(c: httpx.Client, g: Guide, customer: str) -> Decimal:
    r = c.get(
        "/v1/ingest/meter-data",
        params={"customer_reference": customer, "meter_reference": g.meter},
    )
    assert r.status_code == 200, r.text
    return Decimal(r.json()["data"][0]["value"])


def test_entitlements_authorize_and_denials(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    g = guide
    with Allotment(server.url) as a:
        ents = a.entitlements(g.customer)
        assert ents[g.rpm].number == 3
        assert ents[g.rpm].rate_window == "MINUTE"
        assert ents.allows(g.models, "gpt-4o-mini")
        assert not ents.allows(g.models, "gpt-4o")
        assert not ents.allows(g.priority)
        auth = a.authorize(g.customer, consume=[{"feature_reference": g.rpm}])
        assert auth.remaining[g.rpm] == 2
        assert auth.rate_limits[0].limit == 3
        assert auth.headers["ratelimit-policy"] == f'"{g.rpm}";q=3;w=60'
        with pytest.raises(EnumValueNotAllowed) as e:
            a.authorize(g.customer, checks=[{"feature_reference": g.models, "value": "gpt-4o"}])
        assert e.value.extensions["plans_including"] == [g.pro]
        assert e.value.status == 403
        with pytest.raises(SwitchOff):
            a.authorize(g.customer, checks=[{"feature_reference": g.priority}])
        a.authorize(g.customer, consume=[{"feature_reference": g.rpm, "amount": 2}])
        with pytest.raises(RateLimited) as rl:
            a.authorize(g.customer, consume=[{"feature_reference": g.rpm}])
        assert 0 < rl.value.retry_after <= 60
        assert rl.value.headers["retry-after"]


def test_cache_ttl(server: ServerProcess, client: httpx.Client, guide: Guide) -> None:
    g = guide
    with Allotment(server.url, cache_ttl=3600) as a:
        first = a.entitlements(g.customer)
        sub = client.patch(
            f"/v1/pricing-plan-subscriptions/{g.subscription_id}",
            json={"pricing_plan_reference": g.pro},
        )
        assert sub.status_code == 200, sub.text
        assert a.entitlements(g.customer) is first  # served from the cache
        fresh = a.entitlements(g.customer, fresh=True)
        assert fresh.allows(g.priority)
    with Allotment(server.url, cache_ttl=0.000001) as b:
        assert b.entitlements(g.customer).allows(g.priority)


def test_reserve_commits_what_was_used_and_releases_on_error(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    g = guide
    with Allotment(server.url) as a:
        with a.reserve(g.customer, g.budget, 400) as r:
            r.use(100)
            r.use(23)
        assert r.result is not None
        assert r.result["status"] == "committed"
        assert usage(client, g, g.customer) == 123
        with pytest.raises(RuntimeError), a.reserve(g.customer, g.budget, 800) as r2:
            raise RuntimeError("the completion failed")
        assert r2.result is not None
        assert r2.result["status"] == "released"
        with pytest.raises(BudgetExhausted):
            a.authorize(g.customer, reserve=[{"feature_reference": g.budget, "amount": 878}])
        with a.reserve(g.customer, g.budget, 877):
            pass


def test_async_client_same_behaviour(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    g = guide

    async def main() -> None:
        async with AsyncAllotment(server.url) as a:
            ents = await a.entitlements(g.customer)
            assert ents[g.budget].type == "NUMBER"
            async with a.reserve(g.customer, g.budget, 50) as r:
                r.use(7)
            with pytest.raises(EnumValueNotAllowed):
                await a.authorize(
                    g.customer, checks=[{"feature_reference": g.models, "value": "gpt-4o"}]
                )
            await a.ingest([{"type": g.meter, "subject": g.customer, "data": {"tokens": 5}}] * 1)
            await a.ingest({"type": g.meter, "subject": g.customer, "data": {"tokens": 6}})
        assert a.failed_events == []

    asyncio.run(main())
    assert usage(client, g, g.customer) == 7 + 5 + 6


def test_ingest_batches_retries_and_flushes_on_close(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    g = guide
    transport = Counting(fail=2)
    with Allotment(server.url, transport=transport, batch_size=100, flush_interval=5.0) as a:
        a.ingest(
            [{"type": g.meter, "subject": g.customer, "data": {"tokens": 1}} for _ in range(250)]
        )
    posts = [p for p in transport.paths if p == "/api/v1/events"]
    assert len(posts) == 3 + 2  # 100 + 100 + 50, the first try failed twice and was retried
    assert a.failed_events == []
    assert usage(client, g, g.customer) == 250


def test_lease_serves_spends_locally(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    g = guide
    transport = Counting()
    with Allotment(server.url, transport=transport, lease=LeaseSettings(Decimal(100))) as a:
        local = [a.spend(g.customer, g.budget, 1) for _ in range(250)]
    assert local.count(False) == 3  # three leases of 100
    authorizes = [p for p in transport.paths if p.endswith("/authorize")]
    assert len(authorizes) == 3
    assert usage(client, g, g.customer) == 250  # committed at renewal and on close


def test_lease_shrinks_to_what_is_left_then_refuses(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    g = guide
    spent = 0

    def spend_all(a: Allotment) -> None:
        nonlocal spent
        while True:
            a.spend(g.customer, g.budget, 7)
            spent += 7

    with Allotment(server.url, lease=LeaseSettings(Decimal(300))) as a:
        with pytest.raises(BudgetExhausted):
            spend_all(a)
    assert spent == 7 * (1000 // 7)
    assert usage(client, g, g.customer) == spent


def test_spend_without_lease_is_an_error(server: ServerProcess) -> None:
    from allotment_client import AllotmentError

    with Allotment(server.url) as a, pytest.raises(AllotmentError):
        a.spend(unique("c"), "f", 1)
