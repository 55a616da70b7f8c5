"""The official Python SDK ``openmeter==1.0.0b236`` as a real client against a real server
process: every call of ``customers-contract.md`` §3, in its order, on a server with a test
clock (so every number and time is known exactly), on every backend.

The customer's usage arrives with the CloudEvents subject set to one of its ``subjectKeys``,
which differs from its key (contract §3, notes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from corehttp.exceptions import HttpResponseError, ResourceNotFoundError
from openmeter import Client

from tests.support import ServerProcess, unique

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
MEASURE = NOW - timedelta(hours=1)
"""A whole hour in the current MONTH period (an HOUR history window starting before
measureUsageFrom would be dropped)."""
ANCHOR = "2024-01-01T00:00:00Z"


def z(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def sdk_server(new_db_url: Callable[[], str]) -> Iterator[ServerProcess]:
    proc = ServerProcess(new_db_url(), env={"ALLOTMENT_TEST_CLOCK": z(NOW)}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def om(sdk_server: ServerProcess) -> Iterator[Client]:
    with Client(endpoint=sdk_server.url) as client:
        yield client


def raw(model: Any) -> dict[str, Any]:
    """A returned model as the JSON the server sent (camelCase keys); the SDK hands some union
    results back as plain dicts already."""
    if isinstance(model, dict):
        return model
    out: dict[str, Any] = model.as_dict()
    return out


def setup_world(server: ServerProcess) -> dict[str, str]:
    """Two metered features on one meter, and events for the customer's subject key: 100 for
    the first feature's group, 40 for the second's (before the reset instant)."""
    meter, key, subject = unique("tokens"), unique("acme"), unique("acme_prod")
    f1, f2, event_type = unique("f"), unique("g"), unique("prompt")
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/api/v1/meters", json={"slug": meter, "aggregation": "SUM",
                                           "eventType": event_type, "valueProperty": "$.tokens",
                                           "groupBy": {"model": "$.model"}})  # fmt: skip
        assert r.status_code == 200, r.text  # OpenMeter answers a meter create with 200
        for fk, model in ((f1, "a"), (f2, "b")):
            body = {"key": fk, "name": fk, "meterSlug": meter,
                    "meterGroupByFilters": {"model": model}}  # fmt: skip
            r = c.post("/api/v1/features", json=body)
            assert r.status_code == 201, r.text
    return {"meter": meter, "key": key, "subject": subject, "f1": f1, "f2": f2,
            "event_type": event_type}  # fmt: skip


def ingest(server: ServerProcess, w: dict[str, str], model: str, tokens: int) -> None:
    event = {
        "specversion": "1.0",
        "id": unique("e"),
        "source": "sdk-test",
        "type": w["event_type"],
        "subject": w["subject"],
        "time": z(NOW - timedelta(minutes=5)),
        "data": {"tokens": tokens, "model": model},
    }
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/api/v1/events", json=event,
                   headers={"content-type": "application/cloudevents+json"})  # fmt: skip
        assert r.status_code == 204, r.text


def test_sdk_customer_calls(om: Client, sdk_server: ServerProcess) -> None:
    w = setup_world(sdk_server)
    key, s = w["key"], w["subject"]

    # customers_create / customers_get (by key and by id)
    created = om.customers.create({"name": "ACME, Inc.", "key": key,
                                   "primaryEmail": "billing@acme.test", "currency": "USD",
                                   "usageAttribution": {"subjectKeys": [s]}})  # fmt: skip
    assert created.key == key
    assert created.usage_attribution.subject_keys == [s]
    assert created.currency == "USD"
    cid = created.id
    assert raw(om.customers.get(key)) == raw(created)
    assert raw(om.customers.get(cid)) == raw(created)

    # customer_entitlements_v2_post (two metered entitlements)
    made = {}
    for fk in (w["f1"], w["f2"]):
        e = om.customer_entitlements_v2.post(key, {
            "type": "metered", "featureKey": fk, "isSoftLimit": False,
            "measureUsageFrom": z(MEASURE), "usagePeriod": {"interval": "MONTH", "anchor": ANCHOR},
        })  # fmt: skip
        body = raw(e)
        assert body["type"] == "metered"
        assert body["customerId"] == cid
        assert body["customerKey"] == key
        assert body["measureUsageFrom"] == z(MEASURE)
        assert body["lastReset"] == z(MEASURE)
        # the first period starts at measureUsageFrom (engine-semantics §3.6)
        assert body["currentUsagePeriod"] == {"from": z(MEASURE), "to": "2026-07-01T00:00:00Z"}
        assert body["usagePeriod"]["interval"] == "MONTH"
        made[fk] = body
    e1, e2 = made[w["f1"]], made[w["f2"]]

    # customer_entitlements_v2_list / _get (by feature key and by id)
    listed = om.customer_entitlements_v2.list(key)
    assert listed.total_count == 2
    assert {x["id"] for x in raw(listed)["items"]} == {e1["id"], e2["id"]}
    assert raw(om.customer_entitlements_v2.get(key, w["f1"]))["id"] == e1["id"]
    assert raw(om.customer_entitlements_v2.get(key, e1["id"]))["id"] == e1["id"]

    # entitlements_v2_list_and_get
    page = om.entitlements_v2.list(customer_keys=[key])
    assert page.total_count == 2
    assert raw(om.entitlements_v2.get(e1["id"]))["featureKey"] == w["f1"]

    # customer_entitlement_v2_grants (two grants), listed per entitlement and globally
    grant_ids = []
    for purpose in ("launch", "bonus"):
        g = om.customer_entitlement_v2.create_customer_entitlement_grant(key, w["f1"], {
            "amount": 1000, "effectiveAt": z(MEASURE), "priority": 1, "maxRolloverAmount": 0,
            "minRolloverAmount": 0, "expiration": {"duration": "MONTH", "count": 1},
            "metadata": {"purpose": purpose},
        })  # fmt: skip
        body = raw(g)
        assert body["expiration"] == {"duration": "MONTH", "count": 1}
        assert body["expiresAt"] == z(MEASURE.replace(month=7))
        assert body["entitlementId"] == e1["id"]
        grant_ids.append(body["id"])
    grants = om.customer_entitlement_v2.get_grants(key, w["f1"])
    assert [x["id"] for x in raw(grants)["items"]] == grant_ids
    everywhere = om.grants_v2.list(customer=[key])
    assert {x["id"] for x in raw(everywhere)["items"]} == set(grant_ids)

    # usage of the subject key (not the customer key)
    ingest(sdk_server, w, "a", 100)
    ingest(sdk_server, w, "b", 40)
    later = NOW + timedelta(minutes=2)

    # customer_entitlement_v2_value (with grantBalances) and the v1-path value
    v2 = raw(om.customer_entitlement_v2.get_customer_entitlement_value(key, w["f1"], time=later))
    balances = v2.pop("grantBalances")
    assert v2 == {"hasAccess": True, "balance": 1900, "usage": 100, "overage": 0,
                  "totalAvailableGrantAmount": 2000}  # fmt: skip
    assert set(balances) == set(grant_ids)  # equal priority and effectiveAt: either burns first
    assert sorted(balances.values()) == [900, 1000]
    v1 = raw(om.customer_entitlement.get_customer_entitlement_value(key, w["f1"], time=later))
    assert v1 == v2

    # customer_access
    access = raw(om.customer.get_customer_access(key))
    assert set(access["entitlements"]) == {w["f1"], w["f2"]}
    assert access["entitlements"][w["f1"]]["usage"] == 100

    # customer_entitlement_v2_history
    history = raw(om.customer_entitlement_v2.get_customer_entitlement_history(
        key, w["f1"], window_size="HOUR", from_parameter=MEASURE,
    ))  # fmt: skip
    assert sum(x["usage"] for x in history["windowedHistory"]) == 100
    assert history["burndownHistory"]

    # customer_entitlement_v2_reset on the second feature (usage 40)
    before = raw(om.customer_entitlement_v2.get_customer_entitlement_value(key, w["f2"]))
    assert before["usage"] == 40
    assert om.customer_entitlement_v2.reset_customer_entitlement(
        key, e2["id"], {"retainAnchor": True}
    ) is None  # fmt: skip
    after = raw(om.customer_entitlement_v2.get_customer_entitlement_value(key, w["f2"]))
    assert after["usage"] == 0
    again = raw(om.customer_entitlements_v2.get(key, e2["id"]))
    assert again["lastReset"] == z(NOW)
    assert again["usagePeriod"]["anchor"] == ANCHOR

    # customer_entitlements_v2_override_and_delete
    flag = unique("flag")
    with httpx.Client(base_url=sdk_server.url) as c:
        assert c.post("/api/v1/features", json={"key": flag, "name": "F"}).status_code == 201
    b = raw(om.customer_entitlements_v2.post(key, {"type": "boolean", "featureKey": flag}))
    o = raw(om.customer_entitlements_v2.override(
        key, flag, {"type": "boolean", "featureKey": flag, "metadata": {"overridden": "yes"}},
    ))  # fmt: skip
    assert o["id"] != b["id"]
    assert o["metadata"] == {"overridden": "yes"}
    assert raw(om.customer_entitlements_v2.get(key, flag))["id"] == o["id"]
    assert om.customer_entitlements_v2.delete(key, o["id"]) is None
    with pytest.raises(ResourceNotFoundError):
        om.customer_entitlements_v2.get(key, flag)


def test_sdk_errors_are_problems(om: Client, sdk_server: ServerProcess) -> None:
    w = setup_world(sdk_server)
    with pytest.raises(ResourceNotFoundError):
        om.customers.get(unique("nobody"))
    om.customers.create({"name": "A", "key": w["key"]})
    with pytest.raises(HttpResponseError) as err:
        om.customers.create({"name": "B", "key": w["key"]})
    assert err.value.status_code == 409
    with pytest.raises(HttpResponseError) as err:
        om.customer_entitlements_v2.post(w["key"], {"type": "metered", "featureKey": w["f1"]})
    assert err.value.status_code == 400
    om.customers.delete(w["key"])
    with pytest.raises(ResourceNotFoundError):
        om.customers.get(w["key"])
