"""/v1/pricing-plans: versioned plans with typed values (catalog.md §3)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.v1_helpers import feature, ok, plan, v1_problem
from tests.support import unique


@pytest.fixture
def feats(client: httpx.Client) -> dict[str, str]:
    return {
        "NUMBER": feature(client)["reference"],
        "ENUM": feature(client, "ENUM", enum_values=["a", "b", "c"])["reference"],
        "SWITCH": feature(client, "SWITCH")["reference"],
        "AMOUNT": feature(client, "AMOUNT", currency="EUR")["reference"],
    }


def test_create_with_every_type_then_read(client: httpx.Client, feats: dict[str, str]) -> None:
    p = plan(client, [
        {"feature_reference": feats["NUMBER"], "number": 600},
        {"feature_reference": feats["ENUM"], "enums": ["a", "c"]},
        {"feature_reference": feats["SWITCH"], "switch": True},
        {"feature_reference": feats["AMOUNT"], "amount": {"value": "25.00"}},
    ], description="d")  # fmt: skip
    assert (p["object_type"], p["version"], p["active_version"]) == ("PRICING_PLAN", 1, 1)
    assert [e.get("number") or e.get("enums") or e.get("switch") or e.get("amount")
            for e in p["entitlements"]] == [
        "600", ["a", "c"], True, {"value": "25.00", "currency": "EUR"}]  # fmt: skip
    assert ok(client.get(f"/v1/pricing-plans/{p['reference']}")) == p


def test_unlimited_and_decimal_numbers(client: httpx.Client, feats: dict[str, str]) -> None:
    p = plan(client, [{"feature_reference": feats["NUMBER"], "number": "unlimited"}])
    assert p["entitlements"][0]["number"] == "unlimited"
    p = plan(client, [{"feature_reference": feats["NUMBER"], "number": "1.50"}])
    assert p["entitlements"][0]["number"] == "1.5"


def test_new_version_never_edits_the_old(client: httpx.Client, feats: dict[str, str]) -> None:
    p = plan(client, [{"feature_reference": feats["NUMBER"], "number": "60"}])
    ref = p["reference"]
    body = {"entitlements": [{"feature_reference": feats["NUMBER"], "number": "600"}]}
    v2 = ok(client.post(f"/v1/pricing-plans/{ref}/versions", json=body), 201)
    assert (v2["version"], v2["active_version"]) == (2, 2)
    assert [v["version"] for v in v2["versions"]] == [1, 2]
    v1 = ok(client.get(f"/v1/pricing-plans/{ref}/versions/1"))
    assert v1["entitlements"][0]["number"] == "60"
    assert v1["active_version"] == 2
    assert ok(client.get(f"/v1/pricing-plans/{ref}"))["entitlements"][0]["number"] == "600"
    v1_problem(client.get(f"/v1/pricing-plans/{ref}/versions/3"), 404,
               "PRICING_PLAN_VERSION_NOT_FOUND")  # fmt: skip
    v1_problem(client.get(f"/v1/pricing-plans/{ref}/versions/x"), 400, "INVALID_INPUT", "version")


def test_archive_hides_from_list(client: httpx.Client) -> None:
    p = plan(client, [])
    ok(client.delete(f"/v1/pricing-plans/{p['reference']}"), 204)
    refs = [x["reference"] for x in ok(client.get("/v1/pricing-plans?limit=1000"))["data"]]
    assert p["reference"] not in refs
    got = ok(client.get(f"/v1/pricing-plans/{p['reference']}"))
    assert "archived_at" in got
    v1_problem(client.delete(f"/v1/pricing-plans/{p['reference']}"), 404,
               "PRICING_PLAN_NOT_FOUND")  # fmt: skip


def test_duplicate_and_unknown(client: httpx.Client) -> None:
    p = plan(client, [])
    body = {"reference": p["reference"], "name": "X"}
    v1_problem(client.post("/v1/pricing-plans", json=body), 409, "PRICING_PLAN_ALREADY_EXISTS",
               "reference")  # fmt: skip
    v1_problem(client.get(f"/v1/pricing-plans/{unique('p')}"), 404, "PRICING_PLAN_NOT_FOUND")
    v1_problem(client.post(f"/v1/pricing-plans/{unique('p')}/versions", json={}), 404,
               "PRICING_PLAN_NOT_FOUND")  # fmt: skip


BAD_VALUES: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("ENUM", {"enums": ["a", "zzz"]}, "ENUM_VALUE_NOT_ALLOWED", "entitlements[0].enums[1]", "zzz"),
    ("ENUM", {"enums": []}, "ENUM_VALUE_NOT_ALLOWED", "entitlements[0].enums", "non-empty"),
    ("ENUM", {"enums": "a"}, "ENUM_VALUE_NOT_ALLOWED", "entitlements[0].enums", "list"),
    ("SWITCH", {"switch": "yes"}, "SWITCH_NOT_BOOLEAN", "entitlements[0].switch", "yes"),
    ("SWITCH", {"switch": 1}, "SWITCH_NOT_BOOLEAN", "entitlements[0].switch", "1"),
    ("NUMBER", {"number": -1}, "NUMBER_INVALID", "entitlements[0].number", "-1"),
    ("NUMBER", {"number": "-0.5"}, "NUMBER_INVALID", "entitlements[0].number", "-0.5"),
    ("NUMBER", {"number": "lots"}, "NUMBER_INVALID", "entitlements[0].number", "lots"),
    ("NUMBER", {"number": True}, "NUMBER_INVALID", "entitlements[0].number", "True"),
    ("NUMBER", {"number": "NaN"}, "NUMBER_INVALID", "entitlements[0].number", "NaN"),
    ("NUMBER", {}, "VALUE_TYPE_MISMATCH", "entitlements[0].number", "required"),
    ("NUMBER", {"switch": True}, "VALUE_TYPE_MISMATCH", "entitlements[0].switch", "NUMBER"),
    ("AMOUNT", {"amount": "25"}, "AMOUNT_INVALID", "entitlements[0].amount", "object"),
    ("AMOUNT", {"amount": {"value": "x"}}, "AMOUNT_INVALID", "entitlements[0].amount.value", "x"),
    (
        "AMOUNT",
        {"amount": {"value": "1", "currency": "eur"}},
        "AMOUNT_INVALID",
        "entitlements[0].amount.currency",
        "eur",
    ),
    (
        "NUMBER",
        {"number": 1, "override": True},
        "INVALID_INPUT",
        "entitlements[0].override",
        "unknown",
    ),
]


@pytest.mark.parametrize(("kind", "value", "code", "field", "word"), BAD_VALUES)
def test_bad_value_is_400_naming_field_and_value(
    client: httpx.Client, feats: dict[str, str], kind: str, value: dict[str, Any], code: str,
    field: str, word: str,
) -> None:  # fmt: skip
    ref = unique("p")
    body = {"reference": ref, "name": "P",
            "entitlements": [{"feature_reference": feats[kind], **value}]}  # fmt: skip
    v1_problem(client.post("/v1/pricing-plans", json=body), 400, code, field, word)
    assert client.get(f"/v1/pricing-plans/{ref}").status_code == 404  # nothing stored


def test_bad_value_on_a_new_version_stores_nothing(
    client: httpx.Client, feats: dict[str, str]
) -> None:
    p = plan(client, [{"feature_reference": feats["SWITCH"], "switch": False}])
    body = {"entitlements": [{"feature_reference": feats["SWITCH"], "switch": "on"}]}
    r = client.post(f"/v1/pricing-plans/{p['reference']}/versions", json=body)
    v1_problem(r, 400, "SWITCH_NOT_BOOLEAN", "entitlements[0].switch", "on")
    assert ok(client.get(f"/v1/pricing-plans/{p['reference']}"))["active_version"] == 1


def test_unknown_or_archived_feature(client: httpx.Client) -> None:
    missing = unique("f")
    body = {"reference": unique("p"), "name": "P",
            "entitlements": [{"feature_reference": missing, "switch": True}]}  # fmt: skip
    v1_problem(client.post("/v1/pricing-plans", json=body), 400, "FEATURE_NOT_FOUND",
               "entitlements[0].feature_reference", missing)  # fmt: skip
    f = feature(client, "SWITCH")
    ok(client.delete(f"/v1/features/{f['reference']}"), 204)
    body["entitlements"] = [{"feature_reference": f["reference"], "switch": True}]
    v1_problem(client.post("/v1/pricing-plans", json=body), 400, "FEATURE_NOT_FOUND")


def test_feature_twice_and_shape(client: httpx.Client, feats: dict[str, str]) -> None:
    e = {"feature_reference": feats["SWITCH"], "switch": True}
    body: dict[str, Any] = {"reference": unique("p"), "name": "P", "entitlements": [e, e]}
    v1_problem(client.post("/v1/pricing-plans", json=body), 400, "INVALID_INPUT",
               "entitlements[1].feature_reference")  # fmt: skip
    body["entitlements"] = {"x": 1}
    v1_problem(client.post("/v1/pricing-plans", json=body), 400, "INVALID_INPUT", "entitlements")
    body = {"reference": "Bad Ref", "name": "P"}
    v1_problem(client.post("/v1/pricing-plans", json=body), 400, "INVALID_INPUT", "reference")


def test_limits_at_n_and_n_plus_1(client: httpx.Client) -> None:
    from allotment.domain import limits

    n = limits.ENUM_VALUES_MAX
    values = [f"v{i}" for i in range(n + 1)]
    body = {"reference": unique("f"), "name": "E", "type": "ENUM", "enum_values": values}
    v1_problem(client.post("/v1/features", json=body), 400, "ENUM_VALUES_INVALID",
               "enum_values", f"at most {n}")  # fmt: skip
    body["enum_values"] = values[:n]
    ok(client.post("/v1/features", json=body), 201)
    m = limits.PLAN_ENTITLEMENTS_MAX
    refs = [feature(client, "SWITCH")["reference"] for _ in range(m + 1)]
    items = [{"feature_reference": r, "switch": True} for r in refs]
    too_many = {"reference": unique("p"), "name": "P", "entitlements": items}
    v1_problem(client.post("/v1/pricing-plans", json=too_many), 400, "INVALID_INPUT",
               "entitlements", f"at most {m}")  # fmt: skip
    assert len(plan(client, items[:m])["entitlements"]) == m
