"""/v1 customers, subscriptions, overrides and the one entitlements call (catalog.md §4–§5)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from allotment.domain.limits import QUERY_INT_MAX
from tests.api.v1_helpers import feature, meter, ok, plan, v1_problem
from tests.support import unique


def customer(c: httpx.Client, **extra: Any) -> dict[str, Any]:
    body = {"reference": unique("c").replace("_", "-"), "name": "Acme", **extra}
    out: dict[str, Any] = ok(c.post("/v1/customers", json=body), 201)
    return out


def subscribe(c: httpx.Client, cust: str, plan_ref: str, **extra: Any) -> dict[str, Any]:
    body = {"customer_reference": cust, "pricing_plan_reference": plan_ref, **extra}
    out: dict[str, Any] = ok(c.post("/v1/pricing-plan-subscriptions", json=body), 201)
    return out


def entitled(c: httpx.Client, cust: str) -> dict[str, dict[str, Any]]:
    body = ok(c.get(f"/v1/customers/{cust}/entitlements"))
    return {e["feature_reference"]: e for e in body["entitlements"]}


@pytest.fixture
def setup(client: httpx.Client) -> dict[str, str]:
    n = feature(client, rate_window="MINUTE")["reference"]
    e = feature(client, "ENUM", enum_values=["a", "b"])["reference"]
    s = feature(client, "SWITCH")["reference"]
    a = feature(client, "AMOUNT", currency="USD")["reference"]
    p = plan(client, [
        {"feature_reference": n, "number": 60}, {"feature_reference": e, "enums": ["a"]},
        {"feature_reference": s, "switch": False},
        {"feature_reference": a, "amount": {"value": "25.00"}},
    ])["reference"]  # fmt: skip
    q = plan(client, [{"feature_reference": n, "number": 600},
                      {"feature_reference": s, "switch": True}])["reference"]  # fmt: skip
    return {"n": n, "e": e, "s": s, "a": a, "p": p, "q": q}


def test_customer_is_the_openmeter_customer(client: httpx.Client) -> None:
    cust = customer(client, email="ops@acme.test", subject_keys=["acme-prod"])
    assert cust["object_type"] == "CUSTOMER"
    assert cust["subject_keys"] == ["acme-prod"]
    patched = ok(client.patch(f"/v1/customers/{cust['reference']}", json={"name": "Acme 2"}))
    assert (patched["name"], patched["subject_keys"]) == ("Acme 2", ["acme-prod"])
    assert ok(client.get(f"/v1/customers/{cust['id']}"))["name"] == "Acme 2"
    r = client.get(f"/api/v1/customers/{cust['reference']}")
    if r.status_code == 404 and "no route" in r.text:
        pytest.skip("the OpenMeter customer routes are not served on this branch yet")
    om = ok(r)
    assert (om["id"], om["key"], om["primaryEmail"], om["name"]) == (
        cust["id"], cust["reference"], "ops@acme.test", "Acme 2")  # fmt: skip
    assert om["usageAttribution"]["subjectKeys"] == ["acme-prod"]
    ok(client.delete(f"/v1/customers/{cust['reference']}"), 204)
    assert client.get(f"/v1/customers/{cust['reference']}").status_code == 404
    assert client.get(f"/api/v1/customers/{cust['reference']}").status_code == 404


def test_customer_validation(client: httpx.Client) -> None:
    v1_problem(client.post("/v1/customers", json={"name": "x"}), 400, "INVALID_INPUT",
               "reference")  # fmt: skip
    v1_problem(client.post("/v1/customers", json={"reference": "Bad Ref", "name": "x"}), 400,
               "INVALID_INPUT", "reference")  # fmt: skip
    body = {"reference": unique("c"), "name": "x", "email": "nope"}
    v1_problem(client.post("/v1/customers", json=body), 400, "INVALID_INPUT", "email")
    body = {"reference": unique("c"), "name": "x", "subject_keys": [""]}
    v1_problem(client.post("/v1/customers", json=body), 400, "INVALID_INPUT")
    body = {"reference": unique("c"), "name": "x", "colour": "red"}
    v1_problem(client.post("/v1/customers", json=body), 400, "INVALID_INPUT", "colour")
    cust = customer(client)
    body = {"reference": cust["reference"], "name": "again"}
    v1_problem(client.post("/v1/customers", json=body), 409, "CONFLICT")
    v1_problem(client.get(f"/v1/customers/{unique('c')}"), 404, "NOT_FOUND")
    v1_problem(client.get(f"/v1/customers/{unique('c')}/entitlements"), 404, "NOT_FOUND")


def test_customers_list_pages(client: httpx.Client) -> None:
    for _ in range(3):
        customer(client)
    first = ok(client.get("/v1/customers", params={"limit": 2}))
    assert len(first["data"]) == 2
    assert first["next_cursor"]
    second = ok(client.get("/v1/customers", params={"limit": 2, "cursor": first["next_cursor"]}))
    assert {c["id"] for c in first["data"]}.isdisjoint({c["id"] for c in second["data"]})


def test_subscribe_then_one_call(client: httpx.Client, setup: dict[str, str]) -> None:
    cust = customer(client)["reference"]
    assert entitled(client, cust) == {}
    sub = subscribe(client, cust, setup["p"])
    assert (sub["object_type"], sub["status"], sub["end_at"]) == (
        "PRICING_PLAN_SUBSCRIPTION", "ACTIVE", None)  # fmt: skip
    assert sub["customer_reference"] == cust
    assert sub["pricing_plan_version"] == 1
    got = entitled(client, cust)
    assert got[setup["n"]] == {"feature_reference": setup["n"], "type": "NUMBER", "number": "60",
                               "rate_window": "MINUTE", "source": "PLAN",
                               "pricing_plan_reference": setup["p"]}  # fmt: skip
    assert got[setup["e"]]["enums"] == ["a"]
    assert got[setup["s"]]["switch"] is False
    assert got[setup["a"]]["amount"] == {"value": "25.00", "currency": "USD"}
    assert ok(client.get(f"/v1/pricing-plan-subscriptions/{sub['id']}")) == sub


def test_one_active_per_customer(client: httpx.Client, setup: dict[str, str]) -> None:
    cust = customer(client)["reference"]
    sub = subscribe(client, cust, setup["p"])
    body = {"customer_reference": cust, "pricing_plan_reference": setup["q"]}
    v1_problem(client.post("/v1/pricing-plan-subscriptions", json=body), 409,
               "ACTIVE_SUBSCRIPTION_EXISTS", "customer_reference")  # fmt: skip
    canceled = ok(client.delete(f"/v1/pricing-plan-subscriptions/{sub['id']}"))
    assert canceled["status"] == "CANCELED"
    assert canceled["end_at"]
    assert entitled(client, cust) == {}
    v1_problem(client.delete(f"/v1/pricing-plan-subscriptions/{sub['id']}"), 409,
               "SUBSCRIPTION_CANCELED")  # fmt: skip
    v1_problem(client.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}",
                            json={"pricing_plan_reference": setup["q"]}), 409,
               "SUBSCRIPTION_CANCELED")  # fmt: skip
    newer = subscribe(client, cust, setup["q"])
    listed = ok(client.get("/v1/pricing-plan-subscriptions",
                           params={"customer_reference": cust}))  # fmt: skip
    assert [s["id"] for s in listed["data"]] == [newer["id"], sub["id"]]  # newest first
    page = ok(client.get("/v1/pricing-plan-subscriptions",
                         params={"customer_reference": cust, "limit": 1}))  # fmt: skip
    assert [s["id"] for s in page["data"]] == [newer["id"]]
    rest = ok(client.get("/v1/pricing-plan-subscriptions", params={
        "customer_reference": cust, "limit": 1, "cursor": page["next_cursor"]}))  # fmt: skip
    assert [s["id"] for s in rest["data"]] == [sub["id"]]
    assert rest["next_cursor"] is None


def test_overrides_set_and_removed(client: httpx.Client, setup: dict[str, str]) -> None:
    cust = customer(client)["reference"]
    sub = subscribe(client, cust, setup["p"])
    url = f"/v1/pricing-plan-subscriptions/{sub['id']}"
    body = {"entitlements": [{"feature_reference": setup["n"], "number": "1000", "override": True},
                             {"feature_reference": setup["e"], "enums": ["a", "b"]}]}  # fmt: skip
    patched = ok(client.patch(url, json=body))
    assert patched["pricing_plan_reference"] == setup["p"]
    got = entitled(client, cust)
    assert (got[setup["n"]]["number"], got[setup["n"]]["source"]) == ("1000", "OVERRIDE")
    assert got[setup["e"]]["enums"] == ["a", "b"]
    off = {"entitlements": [{"feature_reference": setup["n"], "override": False}]}
    ok(client.patch(url, json=off))
    got = entitled(client, cust)
    assert (got[setup["n"]]["number"], got[setup["n"]]["source"]) == ("60", "PLAN")
    assert got[setup["e"]]["source"] == "OVERRIDE"
    # overrides survive a plan change; the plan's values change under them
    ok(client.patch(url, json={"pricing_plan_reference": setup["q"]}))
    got = entitled(client, cust)
    assert got[setup["n"]]["number"] == "600"
    assert got[setup["s"]]["switch"] is True
    assert got[setup["e"]]["enums"] == ["a", "b"]  # an override of a feature not on the plan
    assert setup["a"] not in got


def test_version_moves_and_new_versions_do_not_move(
    client: httpx.Client, setup: dict[str, str]
) -> None:
    cust = customer(client)["reference"]
    sub = subscribe(client, cust, setup["q"])
    body = {"entitlements": [{"feature_reference": setup["n"], "number": "700"}]}
    ok(client.post(f"/v1/pricing-plans/{setup['q']}/versions", json=body), 201)
    assert entitled(client, cust)[setup["n"]]["number"] == "600"  # stays on version 1
    url = f"/v1/pricing-plan-subscriptions/{sub['id']}"
    moved = ok(client.patch(url, json={"pricing_plan_reference": setup["q"],
                                       "pricing_plan_version": 2}))  # fmt: skip
    assert moved["pricing_plan_version"] == 2
    assert entitled(client, cust)[setup["n"]]["number"] == "700"
    assert moved["start_at"] == sub["start_at"]


BAD_PATCH: list[tuple[dict[str, Any], str, str]] = [
    (
        {"entitlements": [{"feature_reference": "E", "enums": ["zzz"]}]},
        "ENUM_VALUE_NOT_ALLOWED",
        "entitlements[0].enums[0]",
    ),
    (
        {
            "entitlements": [
                {"feature_reference": "S", "override": False},
                {"feature_reference": "S", "switch": "on"},
            ]
        },
        "INVALID_INPUT",
        "entitlements[1].feature_reference",
    ),
    (
        {
            "entitlements": [
                {"feature_reference": "N", "override": False},
                {"feature_reference": "S", "switch": "on"},
            ]
        },
        "SWITCH_NOT_BOOLEAN",
        "entitlements[1].switch",
    ),
    (
        {"entitlements": [{"feature_reference": "N", "number": "-5"}]},
        "NUMBER_INVALID",
        "entitlements[0].number",
    ),
    (
        {"entitlements": [{"feature_reference": "N", "number": 5, "override": "yes"}]},
        "INVALID_INPUT",
        "entitlements[0].override",
    ),
    (
        {"entitlements": [{"feature_reference": "nope_x", "number": 5}]},
        "FEATURE_NOT_FOUND",
        "entitlements[0].feature_reference",
    ),
    ({"pricing_plan_reference": "nope-plan"}, "PRICING_PLAN_NOT_FOUND", "pricing_plan_reference"),
    (
        {"pricing_plan_reference": "Q", "pricing_plan_version": 9},
        "PRICING_PLAN_NOT_FOUND",
        "pricing_plan_version",
    ),
    ({"pricing_plan_version": 1}, "INVALID_INPUT", "pricing_plan_reference"),
    ({"status": "PAUSED"}, "INVALID_INPUT", "status"),
    # the largest version number is a version that does not exist; one more (or one past
    # BIGINT, a 500 before issue 12) is not a version number
    (
        {"pricing_plan_reference": "Q", "pricing_plan_version": QUERY_INT_MAX},
        "PRICING_PLAN_NOT_FOUND",
        "pricing_plan_version",
    ),
    (
        {"pricing_plan_reference": "Q", "pricing_plan_version": QUERY_INT_MAX + 1},
        "INVALID_INPUT",
        "pricing_plan_version",
    ),
    (
        {"pricing_plan_reference": "Q", "pricing_plan_version": 2**76},
        "INVALID_INPUT",
        "pricing_plan_version",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_PATCH)
def test_bad_patch_changes_nothing(
    client: httpx.Client, setup: dict[str, str], body: dict[str, Any], code: str, field: str
) -> None:
    body = copy.deepcopy(body)  # the cases are shared by every backend's run
    names = {"E": setup["e"], "S": setup["s"], "N": setup["n"], "Q": setup["q"]}
    for item in body.get("entitlements", []):
        item["feature_reference"] = names.get(item["feature_reference"], item["feature_reference"])
    if "pricing_plan_reference" in body:
        body["pricing_plan_reference"] = names.get(body["pricing_plan_reference"],
                                                   body["pricing_plan_reference"])  # fmt: skip
    cust = customer(client)["reference"]
    sub = subscribe(client, cust, setup["p"])
    before = entitled(client, cust)
    r = client.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}", json=body)
    v1_problem(r, 400, code, field)
    assert entitled(client, cust) == before
    assert ok(client.get(f"/v1/pricing-plan-subscriptions/{sub['id']}")) == sub


def test_bad_create(client: httpx.Client, setup: dict[str, str]) -> None:
    cust = customer(client)["reference"]
    url = "/v1/pricing-plan-subscriptions"
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"pricing_plan_reference": setup["p"]}, 400, "INVALID_INPUT", "customer_reference"),
        ({"customer_reference": cust}, 400, "INVALID_INPUT", "pricing_plan_reference"),
        ({"customer_reference": cust, "pricing_plan_reference": "no-plan"}, 400,
         "PRICING_PLAN_NOT_FOUND", "pricing_plan_reference"),
        ({"customer_reference": cust, "pricing_plan_reference": setup["p"],
          "pricing_plan_version": 0}, 400, "INVALID_INPUT", "pricing_plan_version"),
        ({"customer_reference": cust, "pricing_plan_reference": setup["p"],
          "start_at": "2999-01-01T00:00:00Z"}, 400, "INVALID_INPUT", "start_at"),
        ({"customer_reference": cust, "pricing_plan_reference": setup["p"],
          "start_at": "yesterday"}, 400, "INVALID_INPUT", "start_at"),
        ({"customer_reference": unique("c"), "pricing_plan_reference": setup["p"]}, 404,
         "NOT_FOUND", None),
    ]  # fmt: skip
    for body, status, code, field in cases:
        v1_problem(client.post(url, json=body), status, code, field)
    assert ok(client.get(url, params={"customer_reference": cust}))["data"] == []
    v1_problem(client.get(f"{url}/{unique('s')}"), 404, "SUBSCRIPTION_NOT_FOUND")


def test_archived_plan_takes_no_new_subscriptions(client: httpx.Client) -> None:
    p = plan(client, [])
    kept = customer(client)["reference"]
    sub = subscribe(client, kept, p["reference"])
    ok(client.delete(f"/v1/pricing-plans/{p['reference']}"), 204)
    body = {"customer_reference": customer(client)["reference"],
            "pricing_plan_reference": p["reference"]}  # fmt: skip
    v1_problem(client.post("/v1/pricing-plan-subscriptions", json=body), 400,
               "PRICING_PLAN_ARCHIVED", "pricing_plan_reference")  # fmt: skip
    assert ok(client.get(f"/v1/pricing-plan-subscriptions/{sub['id']}"))["status"] == "ACTIVE"


def test_customer_with_active_subscription_is_not_deleted(
    client: httpx.Client, setup: dict[str, str]
) -> None:
    cust = customer(client)["reference"]
    sub = subscribe(client, cust, setup["q"])
    v1_problem(client.delete(f"/v1/customers/{cust}"), 400, "INVALID_INPUT")
    ok(client.delete(f"/v1/pricing-plan-subscriptions/{sub['id']}"))
    ok(client.delete(f"/v1/customers/{cust}"), 204)


def test_archived_feature_leaves_the_one_call(client: httpx.Client) -> None:
    f = feature(client, "SWITCH")
    p = plan(client, [{"feature_reference": f["reference"], "switch": True}])
    cust = customer(client)["reference"]
    subscribe(client, cust, p["reference"])
    assert f["reference"] in entitled(client, cust)
    ok(client.delete(f"/v1/features/{f['reference']}"), 204)
    assert entitled(client, cust) == {}


def test_meter_data_validation(client: httpx.Client) -> None:
    cust = customer(client)["reference"]
    url = "/v1/ingest/meter-data"
    v1_problem(client.get(url, params={"customer_reference": cust}), 400, "INVALID_INPUT",
               "meter_reference")  # fmt: skip
    v1_problem(client.get(url, params={"meter_reference": "x"}), 400, "INVALID_INPUT",
               "customer_reference")  # fmt: skip
    v1_problem(client.get(url, params={"customer_reference": cust, "meter_reference": "nope"}),
               400, "METER_NOT_FOUND", "meter_reference")  # fmt: skip
    v1_problem(
        client.get(
            url, params={"customer_reference": unique("c"), "meter_reference": "tokens_total"}
        ),
        404,
        "NOT_FOUND",
    )
    row = ok(client.get(url, params={"customer_reference": cust,
                                     "meter_reference": "tokens_total"}))["data"][0]  # fmt: skip
    assert row["value"] == "0"


def _ingest(c: httpx.Client, event_type: str, subject: str, value: int) -> None:
    event = {"specversion": "1.0", "id": unique("e"), "source": "t", "type": event_type,
             "subject": subject, "data": {"value": value}}  # fmt: skip
    r = c.post(
        "/api/v1/events", json=event, headers={"content-type": "application/cloudevents+json"}
    )
    assert r.status_code == 204, r.text


def test_budget_carries_usage_and_keeps_it_across_changes(client: httpx.Client) -> None:
    slug = meter(client)
    b = feature(client, meter_reference=slug)["reference"]
    low = plan(client, [{"feature_reference": b, "number": "1000"}])["reference"]
    high = plan(client, [{"feature_reference": b, "number": "5000"}])["reference"]
    cust = customer(client, subject_keys=[unique("s")])
    sub = subscribe(client, cust["reference"], low)
    _ingest(client, slug, cust["reference"], 100)
    _ingest(client, slug, cust["subject_keys"][0], 150)  # a subject key counts too
    _ingest(client, slug, unique("other"), 999)  # someone else's does not
    got = entitled(client, cust["reference"])[b]
    assert (got["number"], got["usage"], got["remaining"], got["has_access"]) == (
        "1000", "250", "750", True)  # fmt: skip
    assert set(got["period"]) == {"from", "to"}
    assert got["period"]["from"] <= sub["start_at"]
    url = f"/v1/pricing-plan-subscriptions/{sub['id']}"
    # an override mid-period: the new allowance for the whole period, usage kept
    ok(client.patch(url, json={"entitlements": [{"feature_reference": b, "number": "200"}]}))
    got = entitled(client, cust["reference"])[b]
    assert (got["number"], got["usage"], got["remaining"], got["has_access"]) == (
        "200", "250", "0", False)  # fmt: skip
    ok(client.patch(url, json={"entitlements": [{"feature_reference": b, "override": False}]}))
    ok(client.patch(url, json={"pricing_plan_reference": high}))  # a plan change: same
    got2 = entitled(client, cust["reference"])[b]
    assert (got2["number"], got2["usage"], got2["remaining"]) == ("5000", "250", "4750")
    assert got2["period"] == got["period"]  # the anchor does not move
    meter_data = ok(client.get("/v1/ingest/meter-data", params={
        "customer_reference": cust["reference"], "meter_reference": slug}))["data"][0]  # fmt: skip
    assert (meter_data["value"], meter_data["period"]) == ("250", got["period"])
    ok(client.delete(url))
    assert entitled(client, cust["reference"]) == {}


def test_unlimited_budget(client: httpx.Client) -> None:
    slug = meter(client)
    b = feature(client, meter_reference=slug)["reference"]
    p = plan(client, [{"feature_reference": b, "number": "unlimited"}])["reference"]
    cust = customer(client)["reference"]
    subscribe(client, cust, p)
    _ingest(client, slug, cust, 10)
    got = entitled(client, cust)[b]
    assert (got["number"], got["usage"], got["remaining"], got["has_access"]) == (
        "unlimited", "10", "unlimited", True)  # fmt: skip


def test_one_call_follows_customer_changes(client: httpx.Client) -> None:
    cust = customer(client)
    old = cust["reference"]
    assert entitled(client, old) == {}  # answered (and cached) for the old reference
    new = unique("c").replace("_", "-")
    ok(client.patch(f"/v1/customers/{old}", json={"reference": new}))
    v1_problem(client.get(f"/v1/customers/{old}/entitlements"), 404, "NOT_FOUND")
    assert entitled(client, new) == {}
    ok(client.delete(f"/v1/customers/{new}"), 204)
    v1_problem(client.get(f"/v1/customers/{new}/entitlements"), 404, "NOT_FOUND")
    r = client.get(f"/v1/customers/{cust['id']}/entitlements")  # by id: deleted, 412
    v1_problem(r, 412, "PRECONDITION_FAILED")


def test_plan_values_on_the_openmeter_routes(client: httpx.Client) -> None:
    slug = meter(client)
    b = feature(client, meter_reference=slug)["reference"]
    e = feature(client, "ENUM", enum_values=["gpt-4o", "gpt-4o-mini"])["reference"]
    on, off = feature(client, "SWITCH")["reference"], feature(client, "SWITCH")["reference"]
    values = [
        {"feature_reference": b, "number": "100"},
        {"feature_reference": e, "enums": ["gpt-4o-mini"]},
        {"feature_reference": on, "switch": True},
        {"feature_reference": off, "switch": False},
    ]
    small = plan(client, values)["reference"]
    big = plan(client, [{**values[0], "number": "1000"}, *values[1:]])["reference"]
    cust = customer(client)["reference"]
    sub = subscribe(client, cust, small)
    _ingest(client, slug, cust, 30)
    access = ok(client.get(f"/api/v1/customers/{cust}/access"))["entitlements"]
    assert access[e] == {"hasAccess": True, "config": '{"enums":["gpt-4o-mini"]}'}
    assert access[on] == {"hasAccess": True}
    assert off not in access
    assert (access[b]["usage"], access[b]["balance"]) == (30, 70)
    # a top-up on the plan's allowance (OpenMeter: 403) is accepted and survives a plan change
    grant = {"amount": 500, "effectiveAt": sub["start_at"], "priority": 10}
    r = client.post(f"/api/v2/customers/{cust}/entitlements/{b}/grants", json=grant)
    assert r.status_code == 201, r.text
    assert entitled(client, cust)[b]["remaining"] == "570"
    ok(client.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}",
                    json={"pricing_plan_reference": big}))  # fmt: skip
    got = entitled(client, cust)[b]
    assert (got["number"], got["usage"], got["remaining"]) == ("1000", "30", "1470")
    v2 = ok(client.get(f"/api/v2/customers/{cust}/entitlements/{b}/value"))
    assert (v2["usage"], v2["balance"]) == (30, 1470)
    on_plan = ok(client.get("/api/v1/customers", params={"planKey": big}))["items"]
    assert [c["key"] for c in on_plan] == [cust]
    assert ok(client.get("/api/v1/customers", params={"planKey": small}))["items"] == []
