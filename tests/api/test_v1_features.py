"""/v1/features: typed features on the one features table (catalog.md §2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.v1_helpers import feature, meter, ok, v1_problem
from tests.support import unique


def test_each_type_round_trips_and_shows_on_api_v1(client: httpx.Client) -> None:
    slug = meter(client)
    budget = feature(client, meter_reference=slug)
    assert budget["usage_period"] == "MONTH"
    assert budget["meter_reference"] == slug
    rate = feature(client, rate_window="MINUTE", description="requests per minute")
    enum = feature(client, "ENUM", enum_values=["a", "b"])
    switch = feature(client, "SWITCH")
    amount = feature(client, "AMOUNT", currency="USD")
    for f in (budget, rate, enum, switch, amount):
        got = ok(client.get(f"/v1/features/{f['reference']}"))
        assert got == f
        assert got["object_type"] == "FEATURE"
        legacy = ok(client.get(f"/api/v1/features/{f['reference']}"))
        assert legacy["key"] == f["reference"]
        assert legacy["id"] == f["id"]
    assert ok(client.get(f"/api/v1/features/{budget['reference']}"))["meterSlug"] == slug
    assert enum["enum_values"] == ["a", "b"]
    assert amount["currency"] == "USD"


def test_api_v1_features_show_as_number_budget_or_switch(client: httpx.Client) -> None:
    slug = meter(client)
    metered, plain = unique("f"), unique("f")
    ok(client.post("/api/v1/features", json={"key": metered, "name": "M", "meterSlug": slug}), 201)
    ok(client.post("/api/v1/features", json={"key": plain, "name": "P"}), 201)
    got = ok(client.get(f"/v1/features/{metered}"))
    assert (got["type"], got["meter_reference"], got["usage_period"]) == ("NUMBER", slug, "MONTH")
    assert ok(client.get(f"/v1/features/{plain}"))["type"] == "SWITCH"


def test_list_pages_with_cursor(client: httpx.Client) -> None:
    made = {feature(client)["reference"] for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        q: dict[str, Any] = {"limit": 2}
        if cursor:
            q["cursor"] = cursor
        page = ok(client.get("/v1/features", params=q))
        assert set(page) == {"data", "next_cursor"}
        assert len(page["data"]) <= 2
        seen += [f["reference"] for f in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert made <= set(seen)
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("limit", ["0", "1001", "x"])
def test_list_limit_bounds(client: httpx.Client, limit: str) -> None:
    v1_problem(client.get("/v1/features", params={"limit": limit}), 400, "INVALID_INPUT", "limit")


def test_list_limit_at_bounds(client: httpx.Client) -> None:
    assert len(ok(client.get("/v1/features", params={"limit": 1}))["data"]) <= 1
    ok(client.get("/v1/features", params={"limit": 1000}))


def test_archive_then_not_found(client: httpx.Client) -> None:
    f = feature(client, "SWITCH")
    ok(client.delete(f"/v1/features/{f['reference']}"), 204)
    v1_problem(client.get(f"/v1/features/{f['reference']}"), 404, "FEATURE_NOT_FOUND")
    v1_problem(client.delete(f"/v1/features/{f['reference']}"), 404, "FEATURE_NOT_FOUND")
    assert client.get(f"/api/v1/features/{f['reference']}").status_code == 404


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"type": "ENUM"}, "ENUM_VALUES_REQUIRED", "enum_values"),
    ({"type": "ENUM", "enum_values": []}, "ENUM_VALUES_INVALID", "enum_values"),
    ({"type": "ENUM", "enum_values": "a"}, "ENUM_VALUES_INVALID", "enum_values"),
    ({"type": "ENUM", "enum_values": ["a", "a"]}, "ENUM_VALUES_INVALID", "enum_values[1]"),
    ({"type": "ENUM", "enum_values": ["a", 3]}, "ENUM_VALUES_INVALID", "enum_values[1]"),
    ({"type": "NUMBER", "enum_values": ["a"]}, "FIELD_NOT_ALLOWED_FOR_TYPE", "enum_values"),
    ({"type": "SWITCH", "enum_values": ["a"]}, "FIELD_NOT_ALLOWED_FOR_TYPE", "enum_values"),
    ({"type": "SWITCH", "meter_reference": "x"}, "FIELD_NOT_ALLOWED_FOR_TYPE", "meter_reference"),
    (
        {"type": "ENUM", "enum_values": ["a"], "currency": "USD"},
        "FIELD_NOT_ALLOWED_FOR_TYPE",
        "currency",
    ),
    ({"type": "AMOUNT", "currency": "usd"}, "INVALID_INPUT", "currency"),
    (
        {"type": "NUMBER", "meter_reference": "no_such_meter_x"},
        "METER_NOT_FOUND",
        "meter_reference",
    ),
    ({"type": "NUMBER", "usage_period": "MONTH"}, "INVALID_INPUT", "usage_period"),
    ({"type": "NUMBER", "rate_window": "WEEK"}, "INVALID_INPUT", "rate_window"),
    ({"type": "BOOLEAN"}, "FEATURE_TYPE_INVALID", "type"),
    ({"type": None}, "FEATURE_TYPE_INVALID", "type"),
    ({"type": "SWITCH", "colour": "red"}, "INVALID_INPUT", "colour"),
    ({"type": "SWITCH", "name": ""}, "INVALID_INPUT", "name"),
    ({"type": "SWITCH", "reference": "Has Space"}, "INVALID_INPUT", "reference"),
    ({"type": "SWITCH", "reference": "a" * 65}, "INVALID_INPUT", "reference"),
]


@pytest.mark.parametrize(("extra", "code", "field"), BAD)
def test_bad_feature_is_400_with_code_and_field(
    client: httpx.Client, extra: dict[str, Any], code: str, field: str
) -> None:
    ref = unique("f")
    body = {"reference": ref, "name": "F", **extra}
    v1_problem(client.post("/v1/features", json=body), 400, code, field)
    if body["reference"] == ref:
        assert client.get(f"/v1/features/{ref}").status_code == 404  # nothing stored


def test_meter_that_cannot_be_a_budget(client: httpx.Client) -> None:
    slug = meter(client, "MAX")
    body = {"reference": unique("f"), "name": "F", "type": "NUMBER", "meter_reference": slug}
    v1_problem(client.post("/v1/features", json=body), 400, "METER_NOT_FOUND", "meter_reference")


def test_reference_at_64_is_fine(client: httpx.Client) -> None:
    ref = unique("f")
    ref = ref + "a" * (64 - len(ref))
    ok(client.post("/v1/features", json={"reference": ref, "name": "F", "type": "SWITCH"}), 201)


def test_duplicate_is_409_either_way(client: httpx.Client) -> None:
    f = feature(client, "SWITCH")
    body = {"reference": f["reference"], "name": "F", "type": "NUMBER"}
    v1_problem(client.post("/v1/features", json=body), 409, "FEATURE_ALREADY_EXISTS", "reference")
    legacy = {"key": f["reference"], "name": "F"}
    assert client.post("/api/v1/features", json=legacy).status_code == 409


def test_body_not_json(client: httpx.Client) -> None:
    r = client.post("/v1/features", content=b"{", headers={"content-type": "application/json"})
    v1_problem(r, 400, "INVALID_INPUT", "body")
