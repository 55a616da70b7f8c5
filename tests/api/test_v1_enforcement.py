"""The authorize contract over HTTP against a real server (every backend), on the guide's
catalog: checks (403 codes naming plans), exact rate limits (429 with Retry-After and the
RateLimit fields), budgets (402), reservations (commit once, release), idempotency."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.api.v1_helpers import ok, v1_problem
from tests.enforcement.catalog_setup import Guide, build_guide


@pytest.fixture
def guide(client: httpx.Client) -> Guide:
    return build_guide(client)


def authorize(c: httpx.Client, customer: str, **body: Any) -> httpx.Response:
    return c.post(f"/v1/customers/{customer}/authorize", json=body)


def meter_data(c: httpx.Client, g: Guide, customer: str) -> Decimal:
    body = ok(
        c.get(
            "/v1/ingest/meter-data",
            params={"customer_reference": customer, "meter_reference": g.meter},
        )
    )
    return Decimal(body["data"][0]["value"])


def budget_item(c: httpx.Client, g: Guide) -> dict[str, Any]:
    items = ok(c.get(f"/v1/customers/{g.customer}/entitlements"))["entitlements"]
    found: dict[str, Any] = next(i for i in items if i["feature_reference"] == g.budget)
    return found


def test_checks(client: httpx.Client, guide: Guide) -> None:
    c, g = client, guide
    r = ok(
        authorize(c, g.customer, checks=[{"feature_reference": g.models, "value": "gpt-4o-mini"}])
    )
    assert r == {"allowed": True, "reservation_id": None, "remaining": {}, "rate_limits": []}
    p = v1_problem(
        authorize(c, g.customer, checks=[{"feature_reference": g.models, "value": "gpt-4o"}]),
        403,
        "ENUM_VALUE_NOT_ALLOWED",
        None,
        "'gpt-4o'",
        g.starter,
        g.pro,
    )
    assert p["extensions"]["pricing_plan_reference"] == g.starter
    assert p["extensions"]["plans_including"] == [g.pro]
    v1_problem(
        authorize(c, g.customer, checks=[{"feature_reference": g.priority}]), 403, "SWITCH_OFF"
    )
    v1_problem(
        authorize(c, g.customer, checks=[{"feature_reference": "not_a_feature_here"}]),
        403,
        "NOT_ENTITLED",
        "checks[0]",
    )
    pro = g.subscribe(c, g.pro)
    ok(authorize(c, pro, checks=[{"feature_reference": g.priority},
                                {"feature_reference": g.models, "value": "gpt-4o"}]))  # fmt: skip
    v1_problem(
        authorize(c, g.customer, consume=[{"feature_reference": g.budget}]),
        400,
        "INVALID_INPUT",
        "consume[0].feature_reference",
    )


def test_rate_limit_headers_and_429(client: httpx.Client, guide: Guide) -> None:
    c, g = client, guide
    consume = [{"feature_reference": g.rpm}]
    for left in (2, 1, 0):
        r = authorize(c, g.customer, consume=consume)
        body = ok(r)
        assert body["remaining"] == {g.rpm: str(left)}
        assert body["rate_limits"][0]["limit"] == 3
        assert body["rate_limits"][0]["window"] == "MINUTE"
        assert r.headers["ratelimit-policy"] == f'"{g.rpm}";q=3;w=60'
        assert r.headers["ratelimit"].startswith(f'"{g.rpm}";r={left};t=')
    r = authorize(c, g.customer, consume=consume)
    p = v1_problem(r, 429, "RATE_LIMITED")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["ratelimit"].startswith(f'"{g.rpm}";r=0;t=')
    assert r.headers["ratelimit-policy"] == f'"{g.rpm}";q=3;w=60'
    assert 0 < p["extensions"]["retry_after_ms"] <= 60_000
    # unlimited on pro
    pro = g.subscribe(c, g.pro)
    for _ in range(5):
        ok(authorize(c, pro, consume=consume))


def test_budget_reserve_commit_release(client: httpx.Client, guide: Guide) -> None:
    c, g = client, guide
    res = ok(authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": "600"}]))
    rid = res["reservation_id"]
    assert res["remaining"] == {g.budget: "400"}
    assert "expires_at" in res
    p = v1_problem(
        authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": 401}]),
        402,
        "BUDGET_EXHAUSTED",
    )
    assert p["extensions"]["reserved"] == "600"
    item = budget_item(c, g)
    assert (item["usage"], item["remaining"], item["reserved"]) == ("0", "400", "600")
    held = ok(c.get(f"/v1/reservations/{rid}"))
    assert held["status"] == "held"
    assert held["items"][0]["amount"] == "600"
    done = ok(c.post(f"/v1/reservations/{rid}/commit", json={"amounts": {g.budget: "312"}}))
    assert done["status"] == "committed"
    assert done["event_ids"] == [f"{rid}-{g.budget}"]
    again = ok(c.post(f"/v1/reservations/{rid}/commit", json={"amounts": {g.budget: "900"}}))
    assert again["items"][0]["committed"] == "312"
    assert meter_data(c, g, g.customer) == 312
    item = budget_item(c, g)
    assert (item["usage"], item["remaining"]) == ("312", "688")
    assert "reserved" not in item
    v1_problem(c.post(f"/v1/reservations/{rid}/release"), 409, "RESERVATION_SETTLED")
    # 1000 - 312 = 688 left
    v1_problem(
        authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": 689}]),
        402,
        "BUDGET_EXHAUSTED",
    )
    r2 = ok(authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": 688}]))
    rel = ok(c.post(f"/v1/reservations/{r2['reservation_id']}/release"))
    assert rel["status"] == "released"
    ok(authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": 688}]))


def test_all_or_nothing_over_http(client: httpx.Client, guide: Guide) -> None:
    c, g = client, guide
    body = {
        "checks": [{"feature_reference": g.models, "value": "gpt-4o-mini"}],
        "consume": [{"feature_reference": g.rpm}],
        "reserve": [{"feature_reference": g.budget, "amount": 2000}],
    }
    v1_problem(authorize(c, g.customer, **body), 402, "BUDGET_EXHAUSTED")
    # the refused call consumed nothing: three requests still fit
    for _ in range(3):
        ok(authorize(c, g.customer, consume=body["consume"]))


def test_idempotency_key(client: httpx.Client, guide: Guide) -> None:
    c, g = client, guide
    body = {
        "consume": [{"feature_reference": g.rpm}],
        "reserve": [{"feature_reference": g.budget, "amount": 10}],
        "idempotency_key": "req-123",
    }
    first = authorize(c, g.customer, **body)
    assert "idempotent-replayed" not in first.headers
    again = authorize(c, g.customer, **body)
    assert again.headers["idempotent-replayed"] == "true"
    assert ok(again) == ok(first)
    left = ok(authorize(c, g.customer, consume=body["consume"]))
    assert left["remaining"] == {g.rpm: "1"}
    v1_problem(
        authorize(c, g.customer, **{**body, "reserve": []}),
        409,
        "IDEMPOTENCY_KEY_REUSED",
        "idempotency_key",
    )


def test_customer_named_by_id_shares_holds_and_usage(client: httpx.Client, guide: Guide) -> None:
    """The path takes the id as well as the reference: the same holds, the same locks, and a
    commit's usage event is attributed to the customer's reference."""
    c, g = client, guide
    cid = ok(c.get(f"/v1/customers/{g.customer}"))["id"]
    by_id = ok(authorize(c, cid, reserve=[{"feature_reference": g.budget, "amount": 700}]))
    v1_problem(
        authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": 301}]),
        402,
        "BUDGET_EXHAUSTED",
    )
    ok(
        c.post(
            f"/v1/reservations/{by_id['reservation_id']}/commit", json={"amounts": {g.budget: 9}}
        )
    )
    assert meter_data(c, g, g.customer) == 9


def test_ttl_frees_an_unsettled_reservation(client: httpx.Client, guide: Guide) -> None:
    import time

    c, g = client, guide
    whole = [{"feature_reference": g.budget, "amount": 1000, "ttl_seconds": 1}]
    rid = ok(authorize(c, g.customer, reserve=whole))["reservation_id"]
    v1_problem(authorize(c, g.customer, reserve=whole), 402, "BUDGET_EXHAUSTED")
    deadline = time.monotonic() + 10
    while ok(c.get(f"/v1/reservations/{rid}"))["status"] == "held":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert ok(c.get(f"/v1/reservations/{rid}"))["status"] == "expired"
    ok(authorize(c, g.customer, reserve=whole))


def test_held_reservations_show_in_openmeter_values(client: httpx.Client, guide: Guide) -> None:
    """While held, the budget's `/api/v1` and `/api/v2` value and `/access` keep `balance`
    (the grants' figure) and add `reserved` and `availableBalance`; once settled, the OpenMeter
    schema is back unchanged (usage counted)."""
    c, g = client, guide
    v1 = f"/api/v1/customers/{g.customer}/entitlements/{g.budget}/value"
    v2 = f"/api/v2/customers/{g.customer}/entitlements/{g.budget}/value"
    before = ok(c.get(v1))
    assert "reserved" not in before
    assert Decimal(before["balance"]) == 1000
    rid = ok(authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": 600}]))[
        "reservation_id"
    ]
    ok(authorize(c, g.customer, reserve=[{"feature_reference": g.budget, "amount": "0.5"}]))
    for path in (v1, v2):
        held = ok(c.get(path))
        assert Decimal(held["balance"]) == 1000, path
        assert Decimal(held["reserved"]) == Decimal("600.5"), path
        assert Decimal(held["availableBalance"]) == Decimal("399.5"), path
        assert held["hasAccess"] is True
    ents = ok(c.get(f"/api/v1/customers/{g.customer}/access"))["entitlements"]
    assert Decimal(ents[g.budget]["reserved"]) == Decimal("600.5")
    assert "reserved" not in ents[g.rpm]
    # by entitlement id on /api/v2: the same holds
    listed = ok(c.get(f"/api/v2/customers/{g.customer}/entitlements"))
    eid = next(e["id"] for e in listed["items"] if e["featureKey"] == g.budget)
    by_id = ok(c.get(f"/api/v2/customers/{g.customer}/entitlements/{eid}/value"))
    assert Decimal(by_id["reserved"]) == Decimal("600.5")
    # a value at an explicit time shows no holds (they are known only now)
    at = ok(c.get(v1, params={"time": "2020-01-01T00:00:00Z"}))
    assert "reserved" not in at
    ok(c.post(f"/v1/reservations/{rid}/commit", json={"amounts": {g.budget: 100}}))
    after = ok(c.get(v1))
    assert Decimal(after["balance"]) == 900
    assert Decimal(after["reserved"]) == Decimal("0.5")
    assert Decimal(after["availableBalance"]) == Decimal("899.5")
