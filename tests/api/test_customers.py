"""OpenMeter's customer routes over HTTP (customers-contract §1.1–§1.3) on a real server, on
every backend: shapes, status codes and the error cases (400 validation, 404, 409 conflicts,
412 deleted), each leaving nothing changed."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api import test_features as shared
from tests.api.test_features import create_feature, create_meter, ingest, ok, problem, set_clock
from tests.support import unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc


def customer(c: httpx.Client, *subjects: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "ACME", "key": unique("acme"), **extra}
    if subjects:
        body["usageAttribution"] = {"subjectKeys": list(subjects)}
    result: dict[str, Any] = ok(c.post("/api/v1/customers", json=body), 201)
    return result


def metered_body(feature_key: str, **extra: Any) -> dict[str, Any]:
    return {"type": "metered", "featureKey": feature_key,
            "usagePeriod": {"interval": "MONTH", "anchor": "2024-01-01T00:00:00Z"},
            "measureUsageFrom": "2024-01-01T00:00:00Z", **extra}  # fmt: skip


def test_customer_crud_shapes(client: httpx.Client) -> None:
    s = unique("s")
    address = {"country": "US", "city": "NYC"}
    made = customer(client, s, primaryEmail="b@acme.test", currency="USD",
                    billingAddress=address, metadata={"a": "b"})  # fmt: skip
    assert set(made) == {"id", "name", "key", "usageAttribution", "primaryEmail", "currency",
                         "billingAddress", "metadata", "createdAt", "updatedAt"}  # fmt: skip
    assert made["usageAttribution"] == {"subjectKeys": [s]}
    assert ok(client.get(f"/api/v1/customers/{made['key']}")) == made
    assert ok(client.get(f"/api/v1/customers/{made['id']}")) == made
    # full replace: omitted fields are cleared; no subject keys → usageAttribution absent
    r = ok(client.put(f"/api/v1/customers/{made['id']}", json={"name": "N", "key": made["key"]}))
    assert "usageAttribution" not in r
    assert "currency" not in r
    assert r["name"] == "N"
    page = ok(client.get("/api/v1/customers", params={"key": made["key"]}))
    assert page["totalCount"] == 1
    assert page["page"] == 1
    assert page["pageSize"] == 100
    assert page["items"] == [r]
    ok(client.delete(f"/api/v1/customers/{made['key']}"), 204)
    gone = ok(client.get(f"/api/v1/customers/{made['id']}"))
    assert "deletedAt" in gone
    problem(client.get(f"/api/v1/customers/{made['key']}"), 404)
    page = ok(client.get("/api/v1/customers", params={"key": made["key"]}))
    assert page["totalCount"] == 0
    page = ok(
        client.get("/api/v1/customers", params={"key": made["key"], "includeDeleted": "true"})
    )
    assert page["totalCount"] == 1


def test_validation_400_names_the_field(client: httpx.Client) -> None:
    key = unique("v")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"key": key}, "name"),
        ({"name": "x"}, "either key or usageAttribution.subjectKeys"),
        ({"name": "x", "key": ""}, "key"),
        ({"name": "x", "usageAttribution": {"subjectKeys": [""]}}, "subjectKeys[0]"),
        ({"name": "x", "key": key, "currency": "EURO"}, "currency"),
        ({"name": "x", "key": key, "currency": "XAU"}, "currency"),
    ]
    for body, word in cases:
        problem(client.post("/api/v1/customers", json=body), 400, word)
    problem(client.post("/api/v1/customers", content=b"{", headers={"content-type":
            "application/json"}), 400)  # fmt: skip
    problem(client.get(f"/api/v1/customers/{key}"), 404)
    problem(client.get("/api/v1/customers", params={"pageSize": "1001"}), 400, "pageSize")
    problem(client.get("/api/v1/customers", params={"orderBy": "email"}), 400, "orderBy")
    made = customer(client)
    problem(client.put(f"/api/v1/customers/{made['id']}", json={"key": "x"}), 400, "name")
    assert ok(client.get(f"/api/v1/customers/{made['id']}")) == made


def test_conflicts_409(client: httpx.Client) -> None:
    s = unique("s")
    a = customer(client, s)
    body = problem(client.post("/api/v1/customers", json={"name": "B", "key": a["key"]}), 409,
                   "already used")  # fmt: skip
    assert body["extensions"] == {"conflictingEntityId": a["id"]}
    problem(client.post("/api/v1/customers", json={"name": "B", "key": a["id"]}), 409,
            "overlaps with id")  # fmt: skip
    problem(client.post("/api/v1/customers", json={"name": "B", "key": s}), 409,
            "overlaps with subject")  # fmt: skip
    problem(client.post("/api/v1/customers", json={"name": "B", "usageAttribution":
            {"subjectKeys": [s]}}), 409, "already associated")  # fmt: skip
    b = customer(client)
    problem(client.put(f"/api/v1/customers/{b['id']}", json={"name": "B", "key": a["key"]}), 409)
    assert ok(client.get(f"/api/v1/customers/{b['id']}")) == b


def test_deleted_customer_412(client: httpx.Client) -> None:
    f = create_feature(client, create_meter(client)["slug"])
    made = customer(client)
    cid = made["id"]
    ok(client.delete(f"/api/v1/customers/{cid}"), 204)
    problem(client.delete(f"/api/v1/customers/{cid}"), 412, "customer is deleted")
    problem(client.put(f"/api/v1/customers/{cid}", json={"name": "x", "key": "y"}), 412)
    problem(client.get(f"/api/v1/customers/{cid}/access"), 412)
    problem(client.get(f"/api/v1/customers/{cid}/entitlements/{f['key']}/value"), 412)
    problem(client.post(f"/api/v2/customers/{cid}/entitlements", json=metered_body(f["key"])), 412)
    problem(client.get(f"/api/v2/customers/{cid}/entitlements"), 412)
    problem(client.get(f"/api/v2/customers/{unique('x')}/entitlements"), 404)


def test_v2_entitlements_and_errors(tc: httpx.Client) -> None:
    client = tc
    meter = create_meter(client)
    f = create_feature(client, meter["slug"])
    s = unique("s")
    made = customer(client, s)
    base = f"/api/v2/customers/{made['key']}/entitlements"
    # 400 bad period, 404 unknown feature, 400 metered on a feature without meter
    problem(client.post(base, json=metered_body(f["key"], usagePeriod={"interval": "PT1M"})), 400)
    problem(client.post(base, json=metered_body(unique("nofeature"))), 404)
    plain = create_feature(client)
    problem(client.post(base, json=metered_body(plain["key"])), 400, "no meter")
    assert ok(client.get(base))["totalCount"] == 0
    e = ok(client.post(base, json=metered_body(f["key"], issue={"amount": 100})), 201)
    assert e["customerId"] == made["id"]
    assert e["customerKey"] == made["key"]
    assert e["issue"] == {"amount": 100, "priority": 1}
    assert "subjectKey" not in e
    body = problem(client.post(base, json=metered_body(f["key"])), 409)
    assert body["extensions"] == {"conflictingEntityId": e["id"]}
    # usage of the customer's key and subject keys
    ingest(client, [{"type": meter["eventType"], "subject": s, "time": "2024-01-02T00:00:00Z",
                     "data": {"value": 30}},
                    {"type": meter["eventType"], "subject": made["key"],
                     "time": "2024-01-02T00:00:00Z", "data": {"value": 5}}])  # fmt: skip
    set_clock(client, "2024-01-03T00:00:00Z")
    v = ok(client.get(f"{base}/{f['key']}/value", params={"time": "2024-01-03T00:00:00Z"}))
    assert v["usage"] == 35
    assert v["balance"] == 65
    assert list(v["grantBalances"].values()) == [65]
    v1 = ok(client.get(f"/api/v1/customers/{made['key']}/entitlements/{f['key']}/value",
                       params={"time": "2024-01-03T00:00:00Z"}))  # fmt: skip
    assert v1 == {k: x for k, x in v.items() if k != "grantBalances"}
    # no entitlement: 200 hasAccess false; a bad feature key: 400
    other = create_feature(client)
    assert ok(client.get(f"{base}/{other['key']}/value")) == {"hasAccess": False}
    assert ok(client.get(f"/api/v1/customers/{made['id']}/entitlements/{other['key']}/value")) == {
        "hasAccess": False
    }
    problem(client.get(f"/api/v1/customers/{made['id']}/entitlements/Bad-Key/value"), 400,
            "featureKey")  # fmt: skip
    # grants: 400 on non-metered, v2 expiration optional
    g = ok(client.post(f"{base}/{f['key']}/grants",
                       json={"amount": 10, "effectiveAt": "2024-01-01T00:00:00Z"}),
            201)  # fmt: skip
    assert "expiration" not in g
    assert "expiresAt" not in g
    assert g["maxRolloverAmount"] == 10
    problem(client.post(f"{base}/{f['key']}/grants", json={"effectiveAt": "2024-01-01T00:00:00Z"}),
            400, "amount")  # fmt: skip
    b = ok(client.post(base, json={"type": "boolean", "featureKey": plain["key"]}), 201)
    problem(client.post(f"{base}/{b['id']}/grants",
                        json={"amount": 1, "effectiveAt": "2024-01-01T00:00:00Z"}),
            400)  # fmt: skip
    problem(client.get(f"{base}/{b['id']}/history", params={"windowSize": "DAY"}), 400)
    problem(client.get(f"{base}/{f['key']}/history"), 400, "windowSize")
    problem(client.get(f"{base}/{unique('nope')}"), 404)
    problem(client.put(f"{base}/{unique('nope')}/override", json={"type": "boolean",
            "featureKey": plain["key"]}), 404)  # fmt: skip
    problem(client.delete(f"{base}/{unique('nope')}"), 404)
    access = ok(client.get(f"/api/v1/customers/{made['key']}/access"))
    assert set(access["entitlements"]) == {f["key"], plain["key"]}
    assert access["entitlements"][plain["key"]] == {"hasAccess": True}
    # a customer with active entitlements cannot be deleted
    problem(client.delete(f"/api/v1/customers/{made['key']}"), 409, "active entitlements")
    # global lists
    page = ok(client.get("/api/v2/entitlements", params={"customerKeys": made["key"]}))
    assert page["totalCount"] == 2
    assert ok(client.get(f"/api/v2/entitlements/{e['id']}"))["id"] == e["id"]
    problem(client.get(f"/api/v2/entitlements/{unique('x')}"), 404)
    grants = ok(client.get("/api/v2/grants", params={"customer": made["key"]}))
    assert grants["totalCount"] == 2  # the allowance grant and the top-up
    problem(client.get("/api/v2/grants", params={"customer": unique("x")}), 404)
    by_offset = ok(client.get("/api/v2/grants", params={"customer": made["id"], "limit": 1}))
    assert (by_offset["page"], by_offset["pageSize"], len(by_offset["items"])) == (0, 0, 1)
    # the v1 routes do not see a customer's entitlements
    problem(client.get(f"/api/v1/entitlements/{e['id']}"), 404)
    assert e["id"] not in {x["id"] for x in ok(client.get("/api/v1/entitlements"))}


def test_v2_create_with_grants_is_all_or_nothing(tc: httpx.Client) -> None:
    client = tc
    f = create_feature(client, create_meter(client)["slug"])
    made = customer(client)
    base = f"/api/v2/customers/{made['id']}/entitlements"
    bad = metered_body(
        f["key"],
        grants=[
            {"amount": 1, "effectiveAt": "2024-01-01T00:00:00Z"},
            {"amount": -1, "effectiveAt": "2024-01-01T00:00:00Z"},
        ],
    )
    problem(client.post(base, json=bad), 400, "grants[1]")
    early = metered_body(f["key"], grants=[{"amount": 1, "effectiveAt": "2023-01-01T00:00:00Z"}])
    problem(client.post(base, json=early), 400)
    assert ok(client.get(base))["totalCount"] == 0
    good = metered_body(f["key"], grants=[{"amount": 7, "effectiveAt": "2024-01-01T00:00:00Z"}])
    e = ok(client.post(base, json=good), 201)
    grants = ok(client.get(f"{base}/{e['id']}/grants"))
    assert [g["amount"] for g in grants["items"]] == [7]


def test_routes_are_in_the_served_openapi_document(client: httpx.Client) -> None:
    from allotment.http.routes import customers, v2_entitlements

    doc = ok(client.get("/api/v1/openapi.json"))
    for route in [*customers.ROUTES, *v2_entitlements.ROUTES]:
        path = getattr(route, "path", "")
        methods = {m.lower() for m in getattr(route, "methods", set())} - {"head"}
        assert path in doc["paths"], path
        assert methods <= set(doc["paths"][path]), (path, methods)

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        section, name = ref.split("/")[2:4]
        assert name in doc["components"][section], ref
