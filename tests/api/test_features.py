"""Features API (api-contract §5), plus the small helpers the entitlement API tests share."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support import ServerProcess, unique

CLOCK_START = "2024-01-01T00:00:00Z"

# ---------------------------------------------------------------- shared helpers


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    if status == 204:
        assert r.content == b""
        return None
    assert r.headers["content-type"] == "application/json"
    return r.json()


def problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    for word in words:
        assert word in body.get("detail", ""), f"{word!r} not in {body}"
    return body


def create_meter(
    c: httpx.Client,
    aggregation: str = "SUM",
    *,
    group_by: dict[str, str] | None = None,
    value_property: str | None = "$.value",
) -> dict[str, Any]:
    slug = unique("m")
    body: dict[str, Any] = {"slug": slug, "aggregation": aggregation, "eventType": slug}
    if aggregation != "COUNT" and value_property:
        body["valueProperty"] = value_property
    if group_by:
        body["groupBy"] = group_by
    r = c.post("/api/v1/meters", json=body)
    assert r.status_code in (200, 201), r.text
    meter: dict[str, Any] = r.json()
    return meter


def create_feature(c: httpx.Client, meter_slug: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"key": unique("f"), "name": "Feature"}
    if meter_slug is not None:
        body["meterSlug"] = meter_slug
    body.update(extra)
    result: dict[str, Any] = ok(c.post("/api/v1/features", json=body), 201)
    return result


def ingest(c: httpx.Client, events: list[dict[str, Any]]) -> None:
    """Ingest CloudEvents: each given as {type, subject, time, data}."""
    batch = [{"specversion": "1.0", "id": unique("ev"), "source": "tests", **e} for e in events]
    r = c.post(
        "/api/v1/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert r.status_code in (200, 202, 204), r.text


def set_clock(c: httpx.Client, now: str) -> None:
    ok(c.put("/api/_testing/clock", json={"now": now}))


@pytest.fixture(scope="module")
def clock_server(new_db_url: Callable[[], str]) -> Iterator[ServerProcess]:
    """A server on the settable test clock, shared by one module (tests set the clock)."""
    proc = ServerProcess(new_db_url(), env={"ALLOTMENT_TEST_CLOCK": CLOCK_START}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def tc(clock_server: ServerProcess) -> Iterator[httpx.Client]:
    with clock_server.client() as c:
        set_clock(c, CLOCK_START)
        yield c


# ---------------------------------------------------------------- create


def test_create_metered_feature_shape(client: httpx.Client) -> None:
    meter = create_meter(client, group_by={"model": "$.model", "type": "$.type"})
    key = unique("f")
    body = {
        "key": key,
        "name": "Tokens",
        "meterSlug": meter["slug"],
        "meterGroupByFilters": {"model": "gpt-4"},
    }
    f = ok(client.post("/api/v1/features", json=body), 201)
    assert f["key"] == key
    assert f["name"] == "Tokens"
    assert f["meterSlug"] == meter["slug"]
    assert f["meterGroupByFilters"] == {"model": "gpt-4"}
    assert f["advancedMeterGroupByFilters"] == {"model": {"$eq": "gpt-4"}}
    assert len(f["id"]) == 26
    assert f["createdAt"].endswith("Z")
    for absent in ("metadata", "archivedAt", "deletedAt"):
        assert absent not in f
    assert ok(client.get(f"/api/v1/features/{f['id']}")) == f
    assert ok(client.get(f"/api/v1/features/{key}")) == f


def test_advanced_filters_derive_simple_ones(client: httpx.Client) -> None:
    meter = create_meter(client, group_by={"model": "$.model"})
    f = create_feature(
        client, meter["slug"], advancedMeterGroupByFilters={"model": {"$eq": "gpt-3"}}
    )
    assert f["meterGroupByFilters"] == {"model": "gpt-3"}
    assert f["advancedMeterGroupByFilters"] == {"model": {"$eq": "gpt-3"}}


def test_static_feature_without_meter_and_metadata(client: httpx.Client) -> None:
    f = create_feature(client, metadata={"team": "core"})
    assert "meterSlug" not in f
    assert "meterGroupByFilters" not in f
    assert f["metadata"] == {"team": "core"}


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"name": "x"}, "key"),
        ({"key": "Bad-Key", "name": "x"}, "key"),
        ({"key": "01hk153x00z18anrf2y46yf05d", "name": "x"}, "ULID"),
        ({"key": "a" * 65, "name": "x"}, "key"),
        ({"key": "ok_key"}, "name"),
        ({"key": "ok_key", "name": ""}, "name"),
        ({"key": "ok_key", "name": "x", "metadata": {"a": 1}}, "metadata.a"),
    ],
)
def test_create_rejects_bad_input(client: httpx.Client, body: dict[str, Any], word: str) -> None:
    problem(client.post("/api/v1/features", json=body), 400, word)


def test_key_of_64_characters_is_accepted(client: httpx.Client) -> None:
    key = unique("k") + "_" + "a" * 64
    key = key[:64]
    f = ok(client.post("/api/v1/features", json={"key": key, "name": "x"}), 201)
    assert f["key"] == key


def test_unknown_meter_is_404(client: httpx.Client) -> None:
    body = {"key": unique("f"), "name": "x", "meterSlug": unique("nometer")}
    problem(client.post("/api/v1/features", json=body), 404, "meter")


@pytest.mark.parametrize("aggregation", ["AVG", "MIN", "MAX"])
def test_meter_aggregation_must_suit_the_engine(client: httpx.Client, aggregation: str) -> None:
    meter = create_meter(client, aggregation)
    body = {"key": unique("f"), "name": "x", "meterSlug": meter["slug"]}
    problem(client.post("/api/v1/features", json=body), 400, aggregation)


@pytest.mark.parametrize("aggregation", ["SUM", "COUNT", "UNIQUE_COUNT", "LATEST"])
def test_supported_aggregations(client: httpx.Client, aggregation: str) -> None:
    meter = create_meter(client, aggregation)
    assert create_feature(client, meter["slug"])["meterSlug"] == meter["slug"]


def test_filter_keys_must_be_group_by_keys(client: httpx.Client) -> None:
    meter = create_meter(client, group_by={"model": "$.model"})
    body = {"key": unique("f"), "name": "x", "meterSlug": meter["slug"],
            "meterGroupByFilters": {"region": "eu"}}  # fmt: skip
    problem(client.post("/api/v1/features", json=body), 400, "region")
    body = {"key": unique("f"), "name": "x", "meterSlug": meter["slug"],
            "advancedMeterGroupByFilters": {"region": {"$eq": "eu"}}}  # fmt: skip
    problem(client.post("/api/v1/features", json=body), 400, "region")


def test_unsupported_filter_operator_is_named(client: httpx.Client) -> None:
    meter = create_meter(client, group_by={"model": "$.model"})
    body = {"key": unique("f"), "name": "x", "meterSlug": meter["slug"],
            "advancedMeterGroupByFilters": {"model": {"$in": ["a", "b"]}}}  # fmt: skip
    problem(client.post("/api/v1/features", json=body), 400, "$in")


def test_duplicate_live_key_conflicts_then_reusable_after_archive(client: httpx.Client) -> None:
    first = create_feature(client)
    body = {"key": first["key"], "name": "again"}
    conflict = problem(client.post("/api/v1/features", json=body), 409)
    assert conflict["extensions"] == {"conflictingEntityId": first["id"]}
    ok(client.delete(f"/api/v1/features/{first['key']}"), 204)
    second = ok(client.post("/api/v1/features", json=body), 201)
    assert second["id"] != first["id"]
    assert ok(client.get(f"/api/v1/features/{first['key']}"))["id"] == second["id"]


# ---------------------------------------------------------------- get / delete


def test_archived_feature_is_invisible(client: httpx.Client) -> None:
    f = create_feature(client)
    ok(client.delete(f"/api/v1/features/{f['id']}"), 204)
    problem(client.get(f"/api/v1/features/{f['id']}"), 404)
    problem(client.get(f"/api/v1/features/{f['key']}"), 404)
    problem(client.delete(f"/api/v1/features/{f['id']}"), 404)


def test_unknown_feature_is_404(client: httpx.Client) -> None:
    problem(client.get(f"/api/v1/features/{unique('nope')}"), 404)
    problem(client.get("/api/v1/features/01HK153X00Z18ANRF2Y46YF05D"), 404)


# ---------------------------------------------------------------- list


def test_list_is_an_array_without_page_params(client: httpx.Client) -> None:
    meter = create_meter(client)
    a = create_feature(client, meter["slug"])
    b = create_feature(client, meter["slug"])
    listed = ok(client.get("/api/v1/features", params={"meterSlug": meter["slug"]}))
    assert isinstance(listed, list)
    assert sorted(f["id"] for f in listed) == sorted([a["id"], b["id"]])


def test_list_envelope_and_archived_filter(client: httpx.Client) -> None:
    meter = create_meter(client)
    keep = create_feature(client, meter["slug"])
    gone = create_feature(client, meter["slug"])
    ok(client.delete(f"/api/v1/features/{gone['id']}"), 204)
    params: dict[str, Any] = {"meterSlug": meter["slug"], "page": 1, "pageSize": 10}
    page = ok(client.get("/api/v1/features", params=params))
    assert page["page"] == 1
    assert page["pageSize"] == 10
    assert page["totalCount"] == 1
    assert [f["id"] for f in page["items"]] == [keep["id"]]
    page = ok(client.get("/api/v1/features", params={**params, "includeArchived": "true"}))
    assert page["totalCount"] == 2
    archived = next(f for f in page["items"] if f["id"] == gone["id"])
    assert "archivedAt" in archived
    only_size = ok(client.get("/api/v1/features", params={"meterSlug": meter["slug"],
                                                          "pageSize": 1}))  # fmt: skip
    assert only_size["page"] == 1
    assert only_size["totalCount"] == 1


def test_list_paging_and_order(client: httpx.Client) -> None:
    meter = create_meter(client)
    made = [create_feature(client, meter["slug"]) for _ in range(3)]
    keys = sorted(f["key"] for f in made)
    base = {"meterSlug": meter["slug"]}
    assert [f["key"] for f in ok(client.get("/api/v1/features", params=base))] == keys
    desc = ok(client.get("/api/v1/features", params={**base, "order": "DESC"}))
    assert [f["key"] for f in desc] == keys[::-1]
    p2 = ok(client.get("/api/v1/features", params={**base, "page": 2, "pageSize": 2}))
    assert [f["key"] for f in p2["items"]] == keys[2:]
    assert p2["totalCount"] == 3
    legacy = ok(client.get("/api/v1/features", params={**base, "limit": 1, "offset": 1}))
    assert [f["key"] for f in legacy] == keys[1:2]


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"pageSize": 0},
        {"pageSize": 1001},
        {"page": "x"},
        {"order": "SIDEWAYS"},
        {"orderBy": "color"},
        {"includeArchived": "maybe"},
    ],
)
def test_list_rejects_bad_params(client: httpx.Client, params: dict[str, Any]) -> None:
    problem(client.get("/api/v1/features", params=params), 400, next(iter(params)))


def test_page_size_limit_at_n(client: httpx.Client) -> None:
    page = ok(client.get("/api/v1/features", params={"pageSize": 1000}))
    assert page["pageSize"] == 1000
