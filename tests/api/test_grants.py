"""Grants API (api-contract §7): create, list, void, limits — on the settable test clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from allotment.domain import limits
from allotment.domain.errors import InvalidInput
from allotment.services.grants import GRANTS_LIMIT_ENV, grants_limit
from tests.api import test_features as shared
from tests.api.test_features import (
    CLOCK_START,
    create_feature,
    create_meter,
    ok,
    problem,
    set_clock,
)
from tests.support import ServerProcess, unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc

YEAR = {"duration": "YEAR", "count": 1}


def entitlement(c: httpx.Client, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A metered entitlement (MONTH periods from the clock's now) for a new subject."""
    feature = create_feature(c, create_meter(c)["slug"])
    subject = unique("s")
    body = {"type": "metered", "featureKey": feature["key"],
            "usagePeriod": {"interval": "MONTH"}, **extra}  # fmt: skip
    e = ok(c.post(f"/api/v1/subjects/{subject}/entitlements", json=body), 201)
    return f"/api/v1/subjects/{subject}/entitlements/{e['id']}", e


def grant_body(**extra: Any) -> dict[str, Any]:
    return {"amount": 100, "effectiveAt": "2024-01-01T00:00:00Z", "expiration": YEAR, **extra}


# ---------------------------------------------------------------- create


def test_grant_shape_and_defaults(tc: httpx.Client) -> None:
    base, e = entitlement(tc)
    g = ok(tc.post(base + "/grants", json=grant_body(
        amount=12.5, effectiveAt="2024-01-31T10:11:12.345Z",
        expiration={"duration": "MONTH", "count": 1}, metadata={"k": "v"})), 201)  # fmt: skip
    assert g["entitlementId"] == e["id"]
    assert g["amount"] == 12.5
    assert g["priority"] == 1  # documented minimum, not OpenMeter's 0 (W9)
    assert g["effectiveAt"] == "2024-01-31T10:11:00Z"
    assert g["expiresAt"] == "2024-03-02T10:11:00Z"  # overflowing month, as OpenMeter
    assert g["expiration"] == {"duration": "MONTH", "count": 1}
    assert g["minRolloverAmount"] == 0
    assert g["maxRolloverAmount"] == 0
    assert g["metadata"] == {"k": "v"}
    for absent in ("annotations", "recurrence", "nextRecurrence", "voidedAt", "deletedAt"):
        assert absent not in g
    assert ok(tc.get(base + "/grants")) == [g]


def test_recurring_grant_and_next_recurrence(tc: httpx.Client) -> None:
    base, _ = entitlement(tc)
    set_clock(tc, "2024-01-03T05:00:00Z")
    g = ok(tc.post(base + "/grants", json=grant_body(recurrence={"interval": "DAY"})), 201)
    assert g["recurrence"] == {"interval": "DAY", "intervalISO": "P1D",
                               "anchor": "2024-01-01T00:00:00Z"}  # fmt: skip
    assert g["nextRecurrence"] == "2024-01-04T00:00:00Z"
    g = ok(tc.post(base + "/grants", json=grant_body(
        recurrence={"interval": "PT6H", "anchor": "2024-01-01T01:30:45Z"})), 201)  # fmt: skip
    assert g["recurrence"]["anchor"] == "2024-01-01T01:30:00Z"
    assert g["nextRecurrence"] == "2024-01-03T07:30:00Z"


def test_grant_by_feature_key(tc: httpx.Client) -> None:
    base, e = entitlement(tc)
    by_key = base.replace(e["id"], e["featureKey"])
    g = ok(tc.post(by_key + "/grants", json=grant_body()), 201)
    assert g["entitlementId"] == e["id"]
    assert [x["id"] for x in ok(tc.get(by_key + "/grants"))] == [g["id"]]


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": None}, "amount"),
        ({"amount": "100"}, "amount"),
        ({"priority": 256}, "priority"),
        ({"priority": -1}, "priority"),
        ({"effectiveAt": None}, "effectiveAt"),
        ({"effectiveAt": "soon"}, "effectiveAt"),
        ({"expiration": None}, "expiration"),
        ({"expiration": {"duration": "DECADE", "count": 1}}, "expiration.duration"),
        ({"expiration": {"duration": "DAY", "count": 0}}, "expiration"),
        ({"expiration": {"duration": "DAY", "count": 1001}}, "expiration"),
        ({"minRolloverAmount": 10, "maxRolloverAmount": 5}, "maxRolloverAmount"),  # W8
        ({"minRolloverAmount": -1}, "minRolloverAmount"),
        ({"recurrence": {"interval": "SOMETIMES"}}, "recurrence.interval"),
        ({"metadata": {"a": 1}}, "metadata"),
    ],
)
def test_grant_validation(tc: httpx.Client, extra: dict[str, Any], word: str) -> None:
    base, _ = entitlement(tc)
    body = {k: v for k, v in grant_body(**extra).items() if v is not None}
    problem(tc.post(base + "/grants", json=body), 400, word)
    assert ok(tc.get(base + "/grants")) == []


def test_grant_bounds_accepted(tc: httpx.Client) -> None:
    base, _ = entitlement(tc)
    for extra in (
        {"priority": 0}, {"priority": 255}, {"expiration": {"duration": "HOUR", "count": 1000}},
        {"minRolloverAmount": 5, "maxRolloverAmount": 5}, {"amount": 0.000001},
    ):  # fmt: skip
        ok(tc.post(base + "/grants", json=grant_body(**extra)), 201)


def test_effective_at_not_before_current_period(tc: httpx.Client) -> None:
    base, _ = entitlement(tc, usagePeriod={"interval": "DAY"})
    set_clock(tc, "2024-01-03T12:00:00Z")
    problem(tc.post(base + "/grants", json=grant_body(effectiveAt="2024-01-02T23:59:00Z")),
            400, "effectiveAt")  # fmt: skip
    ok(tc.post(base + "/grants", json=grant_body(effectiveAt="2024-01-03T00:00:00Z")), 201)
    ok(tc.post(base + "/grants", json=grant_body(effectiveAt="2025-01-01T00:00:00Z")), 201)


def test_grants_only_on_live_metered_entitlements(tc: httpx.Client) -> None:
    f = create_feature(tc)
    s = unique("s")
    e = ok(tc.post(f"/api/v1/subjects/{s}/entitlements",
                   json={"type": "boolean", "featureKey": f["key"]}), 201)  # fmt: skip
    problem(tc.post(f"/api/v1/subjects/{s}/entitlements/{e['id']}/grants", json=grant_body()),
            400, "metered")  # fmt: skip
    problem(tc.post(f"/api/v1/subjects/{s}/entitlements/{unique('nokey')}/grants",
                    json=grant_body()), 404)  # fmt: skip
    base, _ = entitlement(tc)
    ok(tc.delete(base), 204)
    problem(tc.post(base + "/grants", json=grant_body()), 404)


def test_grants_per_entitlement_limit_at_n_and_n_plus_1(
    make_server: Callable[..., ServerProcess],
) -> None:
    """N is lowered to 5 through ALLOTMENT_GRANTS_PER_ENTITLEMENT_MAX (1000 in production)."""
    n = 5
    env = {"ALLOTMENT_TEST_CLOCK": CLOCK_START, "ALLOTMENT_GRANTS_PER_ENTITLEMENT_MAX": str(n)}
    with make_server(env=env).client() as c:
        base, _ = entitlement(c, issueAfterReset=1)  # the default grant counts too
        body = grant_body(amount=1)
        for _ in range(n - 1):
            ok(c.post(base + "/grants", json=body), 201)
        assert len(ok(c.get(base + "/grants"))) == n
        problem(c.post(base + "/grants", json=body), 400, "GRANTS_PER_ENTITLEMENT_MAX")
        assert len(ok(c.get(base + "/grants"))) == n


def test_grants_limit_setting_is_bounded() -> None:
    assert grants_limit({}) == limits.GRANTS_PER_ENTITLEMENT_MAX
    assert grants_limit({GRANTS_LIMIT_ENV: "1"}) == 1
    with pytest.raises(InvalidInput):
        grants_limit({GRANTS_LIMIT_ENV: str(limits.GRANTS_PER_ENTITLEMENT_MAX + 1)})


# ---------------------------------------------------------------- lists


def test_global_list_filters_and_paging(tc: httpx.Client) -> None:
    base1, e1 = entitlement(tc)
    base2, e2 = entitlement(tc)
    g1 = ok(tc.post(base1 + "/grants", json=grant_body()), 201)
    g2 = ok(tc.post(base1 + "/grants", json=grant_body(effectiveAt="2024-01-02T00:00:00Z")), 201)
    g3 = ok(tc.post(base2 + "/grants", json=grant_body()), 201)
    s1 = e1["subjectKey"]
    listed = ok(tc.get("/api/v1/grants", params={"subject": s1}))
    assert [g["id"] for g in listed] == [g1["id"], g2["id"]]
    by_feature = ok(tc.get("/api/v1/grants", params={"feature": e2["featureKey"]}))
    assert [g["id"] for g in by_feature] == [g3["id"]]
    both = ok(tc.get("/api/v1/grants", params=[("subject", s1), ("subject", e2["subjectKey"]),
                                               ("page", 1), ("pageSize", 2)]))  # fmt: skip
    assert both["totalCount"] == 3
    assert [g["id"] for g in both["items"]] == [g1["id"], g3["id"]]
    desc = ok(tc.get("/api/v1/grants", params={"subject": s1, "order": "DESC", "orderBy": "id"}))
    assert [g["id"] for g in desc] == [g2["id"], g1["id"]]
    ok(tc.delete(base1), 204)
    assert ok(tc.get("/api/v1/grants", params={"subject": s1})) == []
    deleted = ok(tc.get("/api/v1/grants", params={"subject": s1, "includeDeleted": "true"}))
    assert all("deletedAt" in g for g in deleted)
    assert len(deleted) == 2


@pytest.mark.parametrize("params", [{"page": 0}, {"pageSize": 1001}, {"orderBy": "amount"}])
def test_global_list_rejects_bad_params(tc: httpx.Client, params: dict[str, Any]) -> None:
    problem(tc.get("/api/v1/grants", params=params), 400, next(iter(params)))


# ---------------------------------------------------------------- void


def test_void(tc: httpx.Client) -> None:
    base, _ = entitlement(tc, usagePeriod={"interval": "DAY"})
    g = ok(tc.post(base + "/grants", json=grant_body()), 201)
    set_clock(tc, "2024-01-03T10:00:00Z")
    problem(tc.delete(f"/api/v1/grants/{g['id']}", params={"at": "2024-01-03T10:01:00Z"}),
            400, "future")  # fmt: skip
    problem(tc.delete(f"/api/v1/grants/{g['id']}", params={"at": "2024-01-02T23:00:00Z"}),
            400, "period")  # fmt: skip
    ok(tc.delete(f"/api/v1/grants/{g['id']}", params={"at": "2024-01-03T09:30:30Z"}), 204)
    voided = ok(tc.get(base + "/grants"))[0]
    assert voided["voidedAt"] == "2024-01-03T09:30:00Z"
    problem(tc.delete(f"/api/v1/grants/{g['id']}"), 400, "voided")
    problem(tc.delete("/api/v1/grants/01HK153X00Z18ANRF2Y46YF05D"), 404)


def test_void_stops_the_grant(tc: httpx.Client) -> None:
    base, _ = entitlement(tc)
    g = ok(tc.post(base + "/grants", json=grant_body()), 201)
    assert ok(tc.get(base + "/value"))["balance"] == 100
    set_clock(tc, "2024-01-02T00:00:00Z")
    ok(tc.delete(f"/api/v1/grants/{g['id']}"), 204)
    zero = {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0,
            "totalAvailableGrantAmount": 0}  # fmt: skip
    assert ok(tc.get(base + "/value")) == zero
    before = ok(tc.get(base + "/value", params={"time": "2024-01-01T12:00:00Z"}))
    assert before["balance"] == 100
