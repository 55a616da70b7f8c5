"""Entitlement CRUD, override and lists (api-contract §6), on the settable test clock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import test_features as shared
from tests.api.test_features import create_feature, create_meter, ok, problem, set_clock
from tests.support import unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc

ENT = "/api/v1/subjects/{s}/entitlements"


def metered_feature(c: httpx.Client, aggregation: str = "SUM") -> dict[str, Any]:
    return create_feature(c, create_meter(c, aggregation)["slug"])


def create_ent(c: httpx.Client, subject: str, body: dict[str, Any], status: int = 201) -> Any:
    r = c.post(ENT.format(s=subject), json=body)
    return ok(r, status) if status < 400 else problem(r, status)


def metered(feature: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "metered", "featureKey": feature["key"],
                            "usagePeriod": {"interval": "MONTH"}}  # fmt: skip
    body.update(extra)
    return body


# ---------------------------------------------------------------- create: metered


def test_metered_defaults(tc: httpx.Client) -> None:
    set_clock(tc, "2024-03-10T12:34:56.789Z")
    f = metered_feature(tc)
    s = unique("cust-")
    e = create_ent(tc, s, metered(f))
    assert e["type"] == "metered"
    assert e["featureId"] == f["id"]
    assert e["featureKey"] == f["key"]
    assert e["subjectKey"] == s
    assert e["usagePeriod"] == {"interval": "MONTH", "intervalISO": "P1M",
                                "anchor": "2024-03-10T12:34:00Z"}  # fmt: skip
    assert e["currentUsagePeriod"] == {"from": "2024-03-10T12:34:00Z",
                                       "to": "2024-04-10T12:34:00Z"}  # fmt: skip
    assert e["measureUsageFrom"] == "2024-03-10T12:34:00Z"
    assert e["lastReset"] == "2024-03-10T12:34:00Z"
    assert e["isSoftLimit"] is False
    assert e["isUnlimited"] is False
    assert e["preserveOverageAtReset"] is False
    assert e["activeFrom"] == "2024-03-10T12:34:56.789Z"
    for absent in ("metadata", "annotations", "issueAfterReset", "config", "deletedAt", "activeTo"):
        assert absent not in e
    assert ok(tc.get(f"{ENT.format(s=s)}/{e['id']}")) == e
    assert ok(tc.get(f"/api/v1/entitlements/{e['id']}")) == e


def test_measure_usage_from_variants(tc: httpx.Client) -> None:
    set_clock(tc, "2024-03-10T12:34:56Z")
    f = metered_feature(tc)
    anchor = "2024-01-05T00:00:00Z"
    e = create_ent(tc, unique("s"), metered(f, usagePeriod={"interval": "MONTH", "anchor": anchor},
                                            measureUsageFrom="CURRENT_PERIOD_START"))  # fmt: skip
    assert e["measureUsageFrom"] == "2024-03-05T00:00:00Z"
    assert e["currentUsagePeriod"]["from"] == "2024-03-05T00:00:00Z"
    e = create_ent(tc, unique("s"), metered(f, measureUsageFrom="2024-02-01T10:00:30+02:00"))
    assert e["measureUsageFrom"] == "2024-02-01T08:00:00Z"
    e = create_ent(tc, unique("s"), metered(f, measureUsageFrom="NOW"))
    assert e["measureUsageFrom"] == "2024-03-10T12:34:00Z"


def test_iso_interval_and_one_hour_minimum(tc: httpx.Client) -> None:
    f = metered_feature(tc)
    e = create_ent(tc, unique("s"), metered(f, usagePeriod={"interval": "PT1H"}))
    assert e["usagePeriod"]["interval"] == "PT1H"
    e = create_ent(tc, unique("s"), metered(f, usagePeriod={"interval": "P2W"}))
    assert e["usagePeriod"]["intervalISO"] == "P2W"
    e = create_ent(tc, unique("s"), metered(f, usagePeriod={"interval": "P1D"}))
    assert e["usagePeriod"]["interval"] == "DAY"
    err = create_ent(tc, unique("s"), metered(f, usagePeriod={"interval": "PT59M"}), 400)
    assert "1 hour" in err["detail"]


def test_issue_after_reset_creates_the_default_grant(tc: httpx.Client) -> None:
    f = metered_feature(tc)
    s = unique("s")
    e = create_ent(tc, s, metered(f, issueAfterReset=500, measureUsageFrom="2023-12-31T00:00:00Z"))
    assert e["issueAfterReset"] == 500
    assert e["issueAfterResetPriority"] == 1
    grants = ok(tc.get(f"{ENT.format(s=s)}/{e['id']}/grants"))
    assert len(grants) == 1
    g = grants[0]
    assert g["amount"] == 500
    assert g["priority"] == 1
    assert g["minRolloverAmount"] == 500
    assert g["maxRolloverAmount"] == 500
    assert g["effectiveAt"] == "2023-12-31T00:00:00Z"
    assert g["annotations"] == {"issueAfterReset": True}
    assert "expiresAt" in g
    assert "recurrence" not in g
    e2 = create_ent(tc, unique("s"), metered(f, issueAfterReset=7, issueAfterResetPriority=9))
    assert e2["issueAfterResetPriority"] == 9


def test_issue_after_reset_zero_makes_no_grant(tc: httpx.Client) -> None:
    f = metered_feature(tc)
    s = unique("s")
    e = create_ent(tc, s, metered(f, issueAfterReset=0))
    assert e["issueAfterReset"] == 0
    assert ok(tc.get(f"{ENT.format(s=s)}/{e['id']}/grants")) == []


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        ({"usagePeriod": None}, "usagePeriod"),
        ({"usagePeriod": {"interval": "FORTNIGHT"}}, "usagePeriod.interval"),
        ({"usagePeriod": {"interval": "P0.5D"}}, "fractional"),
        ({"usagePeriod": {"interval": "MONTH", "anchor": "yesterday"}}, "anchor"),
        ({"issueAfterResetPriority": 3}, "issueAfterReset"),
        ({"issueAfterReset": -1}, "issueAfterReset"),
        ({"issueAfterReset": 1, "issueAfterResetPriority": 256}, "issueAfterResetPriority"),
        ({"config": "{}"}, "config"),
        ({"measureUsageFrom": "LATER"}, "measureUsageFrom"),
        ({"isSoftLimit": "yes"}, "isSoftLimit"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"type": "premium"}, "type"),
        ({"featureKey": None}, "featureKey"),
        ({"featureKey": None, "featureId": "nope"}, "featureId"),
    ],
)
def test_metered_validation(tc: httpx.Client, extra: dict[str, Any], word: str) -> None:
    f = metered_feature(tc)
    body = {k: v for k, v in metered(f, **extra).items() if v is not None}
    err = create_ent(tc, unique("s"), body, 400)
    assert word in err["detail"]


def test_metered_needs_a_metered_feature(tc: httpx.Client) -> None:
    f = create_feature(tc)
    err = create_ent(tc, unique("s"), metered(f), 400)
    assert "meter" in err["detail"]


def test_unknown_or_archived_feature_is_404(tc: httpx.Client) -> None:
    create_ent(tc, unique("s"), metered({"key": unique("nope")}), 404)
    f = metered_feature(tc)
    ok(tc.delete(f"/api/v1/features/{f['id']}"), 204)
    create_ent(tc, unique("s"), metered(f), 404)
    create_ent(tc, unique("s"), {"type": "boolean", "featureId": f["id"]}, 404)


def test_feature_id_works_and_must_agree_with_key(tc: httpx.Client) -> None:
    f, other = metered_feature(tc), metered_feature(tc)
    body = metered(f, featureId=f["id"])
    assert create_ent(tc, unique("s"), body)["featureId"] == f["id"]
    body = metered(f, featureId=other["id"])
    create_ent(tc, unique("s"), body, 400)
    body = {"type": "boolean", "featureId": f["id"]}
    assert create_ent(tc, unique("s"), body)["featureKey"] == f["key"]


# ---------------------------------------------------------------- create: static / boolean


def test_static_and_boolean(tc: httpx.Client) -> None:
    f = create_feature(tc)
    s = unique("s")
    cfg = '{"integrations":["github"]}'
    e = create_ent(tc, s, {"type": "static", "featureKey": f["key"], "config": cfg})
    assert e["config"] == cfg
    for absent in ("isSoftLimit", "lastReset", "measureUsageFrom", "usagePeriod"):
        assert absent not in e
    b = create_ent(tc, unique("s"), {"type": "boolean", "featureKey": f["key"],
                                      "usagePeriod": {"interval": "DAY"}})  # fmt: skip
    assert b["usagePeriod"]["interval"] == "DAY"
    assert "currentUsagePeriod" in b
    assert "config" not in b


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"type": "static"}, "config"),
        ({"type": "static", "config": "{not json"}, "config"),
        ({"type": "static", "config": {"a": 1}}, "config"),
        ({"type": "static", "config": "{}", "isSoftLimit": True}, "isSoftLimit"),
        ({"type": "boolean", "measureUsageFrom": "NOW"}, "measureUsageFrom"),
        ({"type": "boolean", "issueAfterReset": 5}, "issueAfterReset"),
        ({"type": "boolean", "preserveOverageAtReset": True}, "preserveOverageAtReset"),
        ({"type": "boolean", "config": "{}"}, "config"),
        ({"type": "boolean", "grants": []}, "grants"),
    ],
)
def test_static_boolean_validation(tc: httpx.Client, body: dict[str, Any], word: str) -> None:
    f = create_feature(tc)
    err = create_ent(tc, unique("s"), {**body, "featureKey": f["key"]}, 400)
    assert word in err["detail"]


# ---------------------------------------------------------------- uniqueness, subjects


def test_one_live_entitlement_per_subject_and_feature(tc: httpx.Client) -> None:
    f = metered_feature(tc)
    s = unique("s")
    first = create_ent(tc, s, metered(f))
    err = create_ent(tc, s, {"type": "boolean", "featureKey": f["key"]}, 409)
    assert err["extensions"] == {"conflictingEntityId": first["id"]}
    create_ent(tc, unique("s"), metered(f))  # another subject is fine
    ok(tc.delete(f"{ENT.format(s=s)}/{first['id']}"), 204)
    create_ent(tc, s, metered(f))  # after delete the slot is free


def test_subject_ulid_resolves_to_its_key(tc: httpx.Client) -> None:
    key = unique("acme-")
    subjects = ok(tc.post("/api/v1/subjects", json=[{"key": key}]))
    sid = subjects[0]["id"]
    f = metered_feature(tc)
    e = create_ent(tc, sid, metered(f))
    assert e["subjectKey"] == key
    assert [x["id"] for x in ok(tc.get(ENT.format(s=key)))] == [e["id"]]
    assert [x["id"] for x in ok(tc.get(ENT.format(s=sid)))] == [e["id"]]


def test_other_subjects_entitlement_is_not_found(tc: httpx.Client) -> None:
    f = metered_feature(tc)
    e = create_ent(tc, unique("s"), metered(f))
    problem(tc.get(f"{ENT.format(s=unique('other'))}/{e['id']}"), 404)
    problem(tc.delete(f"{ENT.format(s=unique('other'))}/{e['id']}"), 404)


# ---------------------------------------------------------------- list, get, delete


def test_subject_list_delete_and_include_deleted(tc: httpx.Client) -> None:
    s = unique("s")
    f1, f2 = metered_feature(tc), create_feature(tc)
    e1 = create_ent(tc, s, metered(f1))
    e2 = create_ent(tc, s, {"type": "boolean", "featureKey": f2["key"]})
    assert [x["id"] for x in ok(tc.get(ENT.format(s=s)))] == [e1["id"], e2["id"]]
    set_clock(tc, "2024-01-02T00:00:00Z")
    ok(tc.delete(f"{ENT.format(s=s)}/{e1['id']}"), 204)
    problem(tc.delete(f"{ENT.format(s=s)}/{e1['id']}"), 404)
    assert [x["id"] for x in ok(tc.get(ENT.format(s=s)))] == [e2["id"]]
    both = ok(tc.get(ENT.format(s=s), params={"includeDeleted": "true"}))
    assert [x["id"] for x in both] == [e1["id"], e2["id"]]
    gone = ok(tc.get(f"/api/v1/entitlements/{e1['id']}"))
    assert gone["deletedAt"] == "2024-01-02T00:00:00Z"
    assert ok(tc.get(ENT.format(s=unique("nobody")))) == []


def test_delete_soft_deletes_grants(tc: httpx.Client) -> None:
    s = unique("s")
    e = create_ent(tc, s, metered(metered_feature(tc), issueAfterReset=10))
    ok(tc.delete(f"{ENT.format(s=s)}/{e['id']}"), 204)
    live = ok(tc.get(f"{ENT.format(s=s)}/{e['id']}/grants"))
    assert live == []
    every = ok(tc.get(f"{ENT.format(s=s)}/{e['id']}/grants", params={"includeDeleted": "true"}))
    assert len(every) == 1
    assert every[0]["deletedAt"] == "2024-01-01T00:00:00Z"


def test_unknown_entitlement_is_404(tc: httpx.Client) -> None:
    problem(tc.get("/api/v1/entitlements/01HK153X00Z18ANRF2Y46YF05D"), 404)
    problem(tc.get(f"{ENT.format(s='x')}/01HK153X00Z18ANRF2Y46YF05D"), 404)
    problem(tc.delete(f"{ENT.format(s='x')}/{unique('nokey')}"), 404)


# ---------------------------------------------------------------- override


def test_override_replaces_in_one_step(tc: httpx.Client) -> None:
    s = unique("s")
    f = metered_feature(tc)
    old = create_ent(tc, s, metered(f, issueAfterReset=5))
    set_clock(tc, "2024-01-05T00:00:00Z")
    body = {"type": "static", "featureKey": f["key"], "config": "[1]"}
    new = ok(tc.put(f"{ENT.format(s=s)}/{f['key']}/override", json=body), 201)
    assert new["id"] != old["id"]
    assert new["type"] == "static"
    assert ok(tc.get(f"/api/v1/entitlements/{old['id']}"))["deletedAt"] == "2024-01-05T00:00:00Z"
    assert [x["id"] for x in ok(tc.get(ENT.format(s=s)))] == [new["id"]]
    again = ok(tc.put(f"{ENT.format(s=s)}/{new['id']}/override", json=metered(f)), 201)
    assert again["type"] == "metered"


def test_override_errors(tc: httpx.Client) -> None:
    s = unique("s")
    f, other = metered_feature(tc), metered_feature(tc)
    problem(tc.put(f"{ENT.format(s=s)}/{f['key']}/override", json=metered(f)), 404)
    e = create_ent(tc, s, metered(f))
    problem(tc.put(f"{ENT.format(s=s)}/{e['id']}/override", json=metered(other)), 400, "feature")
    problem(tc.put(f"{ENT.format(s=s)}/{e['id']}/override", json={"type": "x"}), 400, "type")
    assert [x["id"] for x in ok(tc.get(ENT.format(s=s)))] == [e["id"]]  # nothing changed
    ok(tc.delete(f"{ENT.format(s=s)}/{e['id']}"), 204)
    problem(tc.put(f"{ENT.format(s=s)}/{e['id']}/override", json=metered(f)), 400, "deleted")


# ---------------------------------------------------------------- global list


def test_global_list_filters_and_paging(tc: httpx.Client) -> None:
    f = metered_feature(tc)
    subjects = [unique("s") for _ in range(3)]
    made = [create_ent(tc, s, metered(f)) for s in subjects]
    b = create_ent(tc, subjects[0], {"type": "boolean", "featureKey": create_feature(tc)["key"]})
    by_feature = ok(tc.get("/api/v1/entitlements", params={"feature": f["key"]}))
    assert [x["id"] for x in by_feature] == [m["id"] for m in made]
    by_id = ok(tc.get("/api/v1/entitlements", params={"feature": f["id"]}))
    assert by_id == by_feature
    one = ok(tc.get("/api/v1/entitlements", params={"subject": subjects[0]}))
    assert [x["id"] for x in one] == [made[0]["id"], b["id"]]
    typed = ok(tc.get("/api/v1/entitlements", params={"subject": subjects[0],
                                                      "entitlementType": "boolean"}))  # fmt: skip
    assert [x["id"] for x in typed] == [b["id"]]
    page = ok(tc.get("/api/v1/entitlements", params={"feature": f["key"], "page": 2,
                                                     "pageSize": 2, "order": "DESC"}))  # fmt: skip
    assert page["totalCount"] == 3
    assert [x["id"] for x in page["items"]] == [made[0]["id"]]
    legacy = ok(tc.get("/api/v1/entitlements", params={"feature": f["key"], "limit": 2}))
    assert len(legacy) == 2
    inactive = ok(tc.get("/api/v1/entitlements", params={"feature": f["key"],
                                                         "excludeInactive": "true"}))  # fmt: skip
    assert len(inactive) == 3
    assert ok(tc.get("/api/v1/entitlements", params={"feature": unique("nofeature")})) == []


@pytest.mark.parametrize(
    "params",
    [{"entitlementType": "INVALID_STR"}, {"page": 0}, {"pageSize": 1001}, {"orderBy": "key"}],
)
def test_global_list_rejects_bad_params(tc: httpx.Client, params: dict[str, Any]) -> None:
    problem(tc.get("/api/v1/entitlements", params=params), 400, next(iter(params)))
