"""The catalog's answer to a decision holds only the features the request names (their
budgets' values alone are read), and still names the customer's plan; real storage and the
real catalog, every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.http.app import create_app
from allotment.services.enforcement_source import EnforcementCatalog
from allotment.storage.database import open_database
from tests.api.test_authorize_fast_path import T0, _setup


@pytest.fixture
def catalog(new_db_url: Callable[[], str]) -> Iterator[EnforcementCatalog]:
    url = new_db_url()
    c = Container(Settings(db_url=url), open_database(url), FrozenClock(T0))
    c.start()
    try:

        async def setup() -> None:
            transport = httpx.ASGITransport(app=create_app(c, fast_paths=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await _setup(client)

        asyncio.run(setup())
        yield EnforcementCatalog(c.customers, c.subscriptions, c.catalog, c.meters, c.meter_data)
    finally:
        c.close()


def test_only_the_named_features_and_the_plan(catalog: EnforcementCatalog) -> None:
    # the budget's value is not memoised yet: the whole answer needs it computed
    assert catalog.cached_customer_entitlements("acme") is None
    rpm = catalog.cached_customer_entitlements("acme", features={"rpm", "models"})
    assert rpm is not None
    assert sorted(rpm.values) == ["models", "rpm"]
    assert rpm.pricing_plan_reference == "starter"
    none = catalog.cached_customer_entitlements("acme", features={"nope"})
    assert none is not None
    assert none.values == {}
    assert none.pricing_plan_reference == "starter"  # the 403 still names the plan
    full = catalog.customer_entitlements("acme")
    some = catalog.customer_entitlements("acme", features={"tokens", "rpm"})
    assert sorted(full.values) == ["models", "prio", "rpm", "tokens"]
    assert some.values == {k: full.values[k] for k in ("rpm", "tokens")}
    assert some.pricing_plan_reference == full.pricing_plan_reference == "starter"
