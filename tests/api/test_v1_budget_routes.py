"""A plan's budget through every OpenMeter customer route (issue 15, "Budgets are
entitlements"; customers-contract.md §1.1–§1.3): the customer of a subscription and the
metered entitlement its plan gives are read, topped up, reset and checked on
``/api/v1/customers…``, ``/api/v2/customers/{c}/entitlements…``, ``/api/v2/entitlements`` and
``/api/v2/grants``, each answer checked against the one ``/v1`` call; the routes that would
part the entitlement from its subscription (v2 override and delete) answer 403 as OpenMeter's
do, changing nothing. On both engines, through a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from allotment.domain.timeutil import format_rfc3339
from tests.api.v1_helpers import feature, meter, ok, plan
from tests.support import unique


def _problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    for word in words:
        assert word in body["detail"], body
    return body


def _use(c: httpx.Client, event_type: str, subject: str, value: int, at: datetime) -> None:
    r = c.post("/api/v1/events", json=[{
        "specversion": "1.0", "id": unique("e"), "source": "budget-routes", "type": event_type,
        "subject": subject, "time": format_rfc3339(at), "data": {"value": value}}],
        headers={"content-type": "application/cloudevents-batch+json"})  # fmt: skip
    assert r.status_code == 204, r.text


def _one_call(c: httpx.Client, cust: str, fkey: str) -> dict[str, Any]:
    items = ok(c.get(f"/v1/customers/{cust}/entitlements"))["entitlements"]
    (item,) = [e for e in items if e["feature_reference"] == fkey]
    return dict(item)


def test_every_customer_route_on_a_plans_budget(client: httpx.Client) -> None:
    c = client
    slug = meter(c)
    b = feature(c, meter_reference=slug)["reference"]
    pro = plan(c, [{"feature_reference": b, "number": "100"}])["reference"]
    big = plan(c, [{"feature_reference": b, "number": "300"}])["reference"]
    key, subject = unique("c").replace("_", "-"), unique("s")
    cust = ok(c.post("/v1/customers", json={"reference": key, "name": "Acme",
                                            "subject_keys": [subject]}), 201)  # fmt: skip
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    sub = ok(c.post("/v1/pricing-plan-subscriptions", json={
        "customer_reference": key, "pricing_plan_reference": pro,
        "start_at": format_rfc3339(start)}), 201)  # fmt: skip
    _use(
        c, slug, subject, 30, start + timedelta(hours=1)
    )  # a subject key's usage is the customer's

    # /api/v1/customers: list, by key and by id
    listed = ok(c.get("/api/v1/customers", params={"key": key}))["items"]
    assert [(x["id"], x["key"]) for x in listed] == [(cust["id"], key)]
    assert listed[0]["usageAttribution"] == {"subjectKeys": [subject]}
    assert ok(c.get(f"/api/v1/customers/{key}"))["id"] == cust["id"]
    assert ok(c.get(f"/api/v1/customers/{cust['id']}"))["key"] == key
    assert [x["key"] for x in ok(c.get("/api/v1/customers", params={"planKey": pro}))["items"]] \
        == [key]  # fmt: skip
    # subjects and deletion are refused while the subscription is active, nothing changed
    replace = {"name": "Acme", "key": key, "usageAttribution": {"subjectKeys": []}}
    r = c.put(f"/api/v1/customers/{key}", json=replace)
    _problem(r, 400, "active subscription")
    _problem(c.delete(f"/api/v1/customers/{key}"), 400, "active subscription")
    assert ok(c.get(f"/api/v1/customers/{key}"))["usageAttribution"] == {"subjectKeys": [subject]}

    # v1 value and access: the plan's allowance, the subject key's usage
    value = {"hasAccess": True, "balance": 70, "usage": 30, "overage": 0,
             "totalAvailableGrantAmount": 100}  # fmt: skip
    assert ok(c.get(f"/api/v1/customers/{key}/entitlements/{b}/value")) == value
    assert ok(c.get(f"/api/v1/customers/{key}/access"))["entitlements"] == {b: value}

    # v2: the entitlement the plan gives, by feature key and by id, and in the global list
    (ent,) = ok(c.get(f"/api/v2/customers/{key}/entitlements"))["items"]
    assert (ent["type"], ent["featureKey"], ent["customerId"], ent["customerKey"]) == (
        "metered", b, cust["id"], key)  # fmt: skip
    assert ent["annotations"] == {"managedBy": "pricing_plan_subscription"}
    assert (ent["issueAfterReset"], ent["usagePeriod"]["interval"]) == (100, "MONTH")
    assert ent["usagePeriod"]["anchor"] == sub["start_at"]
    eid = ent["id"]
    base = f"/api/v2/customers/{key}/entitlements"
    assert ok(c.get(f"{base}/{b}")) == ent
    assert ok(c.get(f"{base}/{eid}")) == ent
    assert ok(c.get(f"/api/v2/entitlements/{eid}")) == ent
    assert [x["id"] for x in ok(c.get("/api/v2/entitlements",
                                      params={"customerKeys": key}))["items"]] == [eid]  # fmt: skip
    assert [
        x["id"]
        for x in ok(c.get("/api/v2/entitlements", params={"customerIds": cust["id"]}))["items"]
    ] == [eid]
    # a second entitlement of the feature: 409 naming the plan's
    r = c.post(base, json={"type": "metered", "featureKey": b, "usagePeriod": {"interval": "DAY"}})
    assert _problem(r, 409)["extensions"]["conflictingEntityId"] == eid

    # a top-up on the plan's allowance (OpenMeter: 403, its #3293): accepted
    r = c.post(f"{base}/{b}/grants", json={"amount": 50, "effectiveAt": sub["start_at"],
                                          "priority": 5})  # fmt: skip
    topup = ok(r, 201)
    assert (topup["entitlementId"], topup["amount"]) == (eid, 50)
    grants = ok(c.get(f"{base}/{b}/grants"))["items"]
    allowance = next(g["id"] for g in grants if g["id"] != topup["id"])
    assert sorted(g["amount"] for g in grants) == [50, 100]
    everywhere = ok(c.get("/api/v2/grants", params={"customer": key}))["items"]
    assert sorted(g["id"] for g in everywhere) == sorted(g["id"] for g in grants)
    v2 = ok(c.get(f"{base}/{b}/value"))
    assert (v2["hasAccess"], v2["usage"], v2["balance"], v2["totalAvailableGrantAmount"]) == (
        True, 30, 120, 150)  # fmt: skip
    assert v2["grantBalances"] == {allowance: 70, topup["id"]: 50}  # priority 1 burns first
    one = _one_call(c, key, b)
    assert (one["number"], one["usage"], one["remaining"]) == ("100", "30", "120")
    assert ok(c.get(f"/api/v1/customers/{key}/entitlements/{b}/value"))["balance"] == 120

    # history: the period's usage in hourly windows
    hist = ok(c.get(f"{base}/{b}/history", params={"from": sub["start_at"],
                                                     "windowSize": "HOUR"}))  # fmt: skip
    assert sum(w["usage"] for w in hist["windowedHistory"]) == 30
    assert hist["windowedHistory"][0]["balanceAtStart"] == 150

    # v2 override and delete would part the entitlement from its plan: 403, nothing changed
    r = c.put(f"{base}/{b}/override", json={"type": "metered", "featureKey": b,
                                             "usagePeriod": {"interval": "MONTH"},
                                             "issue": {"amount": 7}})  # fmt: skip
    _problem(r, 403, "managed by subscription", "/v1/pricing-plan-subscriptions")
    _problem(c.delete(f"{base}/{b}"), 403, "managed by subscription")
    _problem(c.delete(f"{base}/{eid}"), 403, "managed by subscription")
    assert ok(c.get(f"{base}/{b}")) == ent
    assert ok(c.get(f"{base}/{b}/value")) == v2

    # a reset (OpenMeter: 403 on plan entitlements) starts a new period from now
    r = c.post(f"{base}/{eid}/reset", json={"retainAnchor": True})
    assert ok(r, 204) is None
    after = ok(c.get(f"{base}/{b}/value"))
    assert after["usage"] == 0
    one = _one_call(c, key, b)
    assert (one["usage"], one["remaining"]) == ("0", str(after["balance"]))
    assert one["period"]["from"] == ok(c.get(f"{base}/{b}"))["currentUsagePeriod"]["from"]
    _use(c, slug, key, 10, datetime.now(UTC))  # the customer's key counts too

    # a plan change keeps the entitlement and its top-up; the new allowance for the period
    ok(c.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}",
               json={"pricing_plan_reference": big}))  # fmt: skip
    kept = ok(c.get(f"{base}/{b}"))
    assert (kept["id"], kept["issueAfterReset"]) == (eid, 300)
    assert topup["id"] in {g["id"] for g in ok(c.get(f"{base}/{b}/grants"))["items"]}
    moved = ok(c.get(f"{base}/{b}/value"))
    assert moved["usage"] == 10
    assert moved["balance"] == after["balance"] - 100 + 300 - 10
    one = _one_call(c, key, b)
    assert (one["number"], one["usage"], one["remaining"]) == (
        "300", "10", str(moved["balance"]))  # fmt: skip
    assert ok(c.get(f"/api/v1/customers/{key}/access"))["entitlements"][b]["balance"] == \
        moved["balance"]  # fmt: skip

    # a cancel ends it (history stays readable by id); then the customer may go
    ok(c.delete(f"/v1/pricing-plan-subscriptions/{sub['id']}"))
    assert ok(c.get(base))["items"] == []
    assert [x["id"] for x in ok(c.get(base, params={"includeDeleted": "true"}))["items"]] == [eid]
    assert ok(c.get(f"/api/v1/customers/{key}/access")) == {"entitlements": {}}
    assert ok(c.get(f"/api/v1/customers/{key}/entitlements/{b}/value")) == {"hasAccess": False}
    assert ok(c.get(f"/api/v2/entitlements/{eid}"))["deletedAt"]
    assert ok(c.delete(f"/api/v1/customers/{key}"), 204) is None
    _problem(c.get(f"/api/v1/customers/{key}"), 404)
    assert ok(c.get(f"/api/v1/customers/{cust['id']}"))["deletedAt"]
    _problem(c.get(f"/api/v2/customers/{cust['id']}/entitlements"), 412, "deleted")
    _problem(c.get(f"/api/v1/customers/{cust['id']}/access"), 412, "deleted")
