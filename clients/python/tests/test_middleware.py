"""The ASGI middleware inside the FastAPI example app (examples/fastapi_app), against a real
Allotment server: the guide's three patterns answered before the endpoint runs, headers on
allowed answers, usage committed after the response."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest
from tests.enforcement.catalog_setup import Guide, build_guide
from tests.support import ServerProcess


@pytest.fixture
def guide(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> Guide:
    g = build_guide(client, rpm=2, budget=10_000)
    monkeypatch.setenv("ALLOTMENT_RATE_FEATURE", g.rpm)
    monkeypatch.setenv("ALLOTMENT_BUDGET_FEATURE", g.budget)
    monkeypatch.setenv("ALLOTMENT_MODELS_FEATURE", g.models)
    return g


def test_example_app_enforces_the_three_patterns(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    import importlib

    import examples.fastapi_app.app as example

    importlib.reload(example)  # read the feature names from the environment
    g = guide
    app = example.create_app(server.url)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as web:
            h = {"x-customer": g.customer}
            assert (await web.get("/health")).status_code == 200  # not metered
            r = await web.post("/chat", params={"prompt": "one two three"}, headers=h)
            assert r.status_code == 200, r.text
            assert r.json() == {"model": "gpt-4o-mini", "tokens": 30}
            assert r.headers["ratelimit-policy"] == f'"{g.rpm}";q=2;w=60'
            # model tier: 403 naming the plans that include it; the endpoint never runs
            r = await web.post("/chat", params={"prompt": "x", "model": "gpt-4o"}, headers=h)
            assert r.status_code == 403
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "ENUM_VALUE_NOT_ALLOWED"
            assert r.json()["extensions"]["plans_including"] == [g.pro]
            # token budget: an estimate over what is left is a 402
            r = await web.post("/chat", params={"prompt": "x", "max_tokens": "20000"}, headers=h)
            assert r.status_code == 402
            assert r.json()["code"] == "BUDGET_EXHAUSTED"
            # rate limit: the second request fits, the third is a 429 with the headers
            assert (await web.post("/chat", params={"prompt": "a"}, headers=h)).status_code == 200
            r = await web.post("/chat", params={"prompt": "a"}, headers=h)
            assert r.status_code == 429
            assert r.json()["code"] == "RATE_LIMITED"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["ratelimit"].startswith(f'"{g.rpm}";r=0;')
        await app.state.allotment.aclose()

    asyncio.run(main())
    r = client.get(
        "/v1/ingest/meter-data",
        params={"customer_reference": g.customer, "meter_reference": g.meter},
    )
    assert Decimal(r.json()["data"][0]["value"]) == 30 + 10  # the actual tokens, committed


def test_endpoint_error_releases_the_reservation(
    server: ServerProcess, client: httpx.Client, guide: Guide
) -> None:
    from allotment_client import AsyncAllotment
    from allotment_client.middleware import AllotmentMiddleware, Requirements
    from fastapi import FastAPI

    g = guide
    app = FastAPI()
    seen: list[str] = []

    @app.post("/boom")
    async def boom() -> None:
        raise RuntimeError("upstream failed")

    allot = AsyncAllotment(server.url)
    app.add_middleware(
        AllotmentMiddleware,  # type: ignore[arg-type]
        client=allot,
        customer=lambda r: g.customer,
        requirements=lambda r: Requirements(
            reserve=[{"feature_reference": g.budget, "amount": 1000}]
        ),
        events=lambda r, status: seen.append(str(status)) or [],
    )

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as web:
            for _ in range(3):  # the whole budget each time: only possible if released
                assert (await web.post("/boom")).status_code == 500
        await allot.aclose()

    asyncio.run(main())
    assert seen == []  # no usage events after a failed endpoint
