"""Subjects API against a real server, on every backend."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from allotment.domain import limits
from allotment.domain.ids import is_ulid
from tests.support import ServerProcess, unique


def _upsert(client: httpx.Client, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = client.post("/api/v1/subjects", json=items)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body: list[dict[str, Any]] = r.json()
    return body


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def test_create_minimal_subject(client: httpx.Client) -> None:
    key = unique("cust")
    [s] = _upsert(client, [{"key": key}])
    assert is_ulid(s["id"])
    assert s["key"] == key
    assert set(s) == {"id", "key", "createdAt", "updatedAt"}
    assert s["createdAt"].endswith("Z")


def test_create_full_subject_and_get_by_id_and_key(client: httpx.Client) -> None:
    key = unique("cust")
    item = {
        "key": key,
        "displayName": "Customer One",
        "metadata": {"tier": "gold", "n": 3, "nested": {"a": [1, None, True]}},
        "stripeCustomerId": "cus_123",
        "currentPeriodStart": "2024-01-01T00:00:00.000Z",
        "currentPeriodEnd": "2024-02-01T01:00:00+01:00",
    }
    [s] = _upsert(client, [item])
    assert s["displayName"] == "Customer One"
    assert s["metadata"] == item["metadata"]
    assert s["stripeCustomerId"] == "cus_123"
    assert s["currentPeriodStart"] == "2024-01-01T00:00:00Z"
    assert s["currentPeriodEnd"] == "2024-02-01T00:00:00Z"
    assert "deletedAt" not in s
    for ref in (s["id"], key):
        r = client.get(f"/api/v1/subjects/{ref}")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json() == s


def test_partial_update_absent_unchanged_null_cleared(client: httpx.Client) -> None:
    key = unique("cust")
    [first] = _upsert(
        client,
        [{"key": key, "displayName": "A", "metadata": {"x": 1}, "stripeCustomerId": "cus_1"}],
    )
    [second] = _upsert(client, [{"key": key, "displayName": "B"}])
    assert second["id"] == first["id"]
    assert second["displayName"] == "B"
    assert second["metadata"] == {"x": 1}
    assert second["stripeCustomerId"] == "cus_1"
    assert second["createdAt"] == first["createdAt"]
    [third] = _upsert(client, [{"key": key, "metadata": None, "stripeCustomerId": None}])
    assert third["id"] == first["id"]
    assert third["displayName"] == "B"
    assert "metadata" not in third
    assert "stripeCustomerId" not in third
    assert client.get(f"/api/v1/subjects/{key}").json() == third


def test_batch_mixed_create_and_update_in_order(client: httpx.Client) -> None:
    a, b = unique("a"), unique("b")
    [existing] = _upsert(client, [{"key": a}])
    out = _upsert(client, [{"key": b, "displayName": "bee"}, {"key": a, "displayName": "ay"}])
    assert [s["key"] for s in out] == [b, a]
    assert out[1]["id"] == existing["id"]
    assert out[1]["displayName"] == "ay"


def test_duplicate_keys_in_one_request_apply_in_order(client: httpx.Client) -> None:
    key = unique("dup")
    out = _upsert(
        client,
        [
            {"key": key, "displayName": "first", "metadata": {"m": 1}},
            {"key": key, "displayName": "second"},
        ],
    )
    assert len(out) == 2
    assert out[0]["id"] == out[1]["id"]
    assert out[1]["displayName"] == "second"
    assert out[1]["metadata"] == {"m": 1}
    assert client.get(f"/api/v1/subjects/{key}").json()["displayName"] == "second"


def test_empty_array_is_ok(client: httpx.Client) -> None:
    assert _upsert(client, []) == []


def test_list_in_creation_order(client: httpx.Client) -> None:
    keys = [unique("ord") for _ in range(3)]
    for key in keys:
        _upsert(client, [{"key": key}])
    r = client.get("/api/v1/subjects")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    listed = [s["key"] for s in r.json() if s["key"] in keys]
    assert listed == keys


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"key": "ok"}, {"key": "ok2"}, {"displayName": "no key"}], "[2].key"),
        ([{"key": ""}], "[0].key"),
        ([{"key": 5}], "[0].key"),
        ([{"key": None}], "[0].key"),
        ([{"key": "ok"}, "not an object"], "[1]"),
        ([{"key": "ok", "displayName": 3}], "[0].displayName"),
        ([{"key": "ok", "metadata": [1]}], "[0].metadata"),
        ([{"key": "ok", "metadata": "x"}], "[0].metadata"),
        ([{"key": "ok", "stripeCustomerId": "acct_1"}], "[0].stripeCustomerId"),
        ([{"key": "ok", "stripeCustomerId": 7}], "[0].stripeCustomerId"),
        ([{"key": "ok", "currentPeriodStart": "yesterday"}], "[0].currentPeriodStart"),
        ([{"key": "ok", "currentPeriodEnd": 1700000000}], "[0].currentPeriodEnd"),
    ],
)
def test_invalid_items_are_400_naming_index_and_field(
    client: httpx.Client, items: list[Any], field: str
) -> None:
    body = _problem(client.post("/api/v1/subjects", json=items), 400)
    assert field in body["detail"]


def test_bad_item_writes_nothing(client: httpx.Client) -> None:
    good = unique("good")
    r = client.post(
        "/api/v1/subjects", json=[{"key": good}, {"key": "x", "stripeCustomerId": "nope"}]
    )
    assert "[1].stripeCustomerId" in _problem(r, 400)["detail"]
    _problem(client.get(f"/api/v1/subjects/{good}"), 404)


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"key": "x"}', b"42"])
def test_body_not_an_array_is_400(client: httpx.Client, body: bytes) -> None:
    r = client.post("/api/v1/subjects", content=body, headers={"content-type": "application/json"})
    _problem(r, 400)


def test_batch_limit_n_and_n_plus_one(client: httpx.Client) -> None:
    n = limits.SUBJECTS_PER_UPSERT_MAX
    prefix = unique("lim")
    out = _upsert(client, [{"key": f"{prefix}_{i}"} for i in range(n)])
    assert len(out) == n
    too_many = [{"key": f"{prefix}_x{i}"} for i in range(n + 1)]
    body = _problem(client.post("/api/v1/subjects", json=too_many), 413)
    assert str(n) in body["detail"]
    _problem(client.get(f"/api/v1/subjects/{prefix}_x0"), 404)


def test_get_unknown_is_404(client: httpx.Client) -> None:
    _problem(client.get(f"/api/v1/subjects/{unique('nope')}"), 404)
    _problem(client.get("/api/v1/subjects/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)


def test_delete_then_404_then_recreate_with_new_id(client: httpx.Client) -> None:
    key = unique("del")
    [s] = _upsert(client, [{"key": key, "displayName": "old"}])
    r = client.delete(f"/api/v1/subjects/{key}")
    assert r.status_code == 204
    assert r.content == b""
    _problem(client.get(f"/api/v1/subjects/{key}"), 404)
    _problem(client.delete(f"/api/v1/subjects/{key}"), 404)
    assert key not in [x["key"] for x in client.get("/api/v1/subjects").json()]
    # the deleted subject stays readable by its id, with deletedAt
    gone = client.get(f"/api/v1/subjects/{s['id']}").json()
    assert gone["id"] == s["id"]
    assert "deletedAt" in gone
    _problem(client.delete(f"/api/v1/subjects/{s['id']}"), 404)
    [again] = _upsert(client, [{"key": key}])
    assert again["id"] != s["id"]
    assert "displayName" not in again
    assert client.get(f"/api/v1/subjects/{key}").json()["id"] == again["id"]


def test_delete_by_id(client: httpx.Client) -> None:
    key = unique("delid")
    [s] = _upsert(client, [{"key": key}])
    assert client.delete(f"/api/v1/subjects/{s['id']}").status_code == 204
    _problem(client.get(f"/api/v1/subjects/{key}"), 404)


def test_delete_unknown_is_404(client: httpx.Client) -> None:
    _problem(client.delete(f"/api/v1/subjects/{unique('nope')}"), 404)


def test_keys_are_free_form(client: httpx.Client) -> None:
    for key in (f"customer-1 {unique()}", f"ent_customer_2-Subject.{unique()}"):
        [s] = _upsert(client, [{"key": key}])
        r = client.get(f"/api/v1/subjects/{key}")
        assert r.status_code == 200
        assert r.json()["id"] == s["id"]


def test_concurrent_first_upserts_across_processes_never_500(
    make_server: Callable[..., ServerProcess], db_url: str
) -> None:
    servers = [make_server(db_url=db_url), make_server(db_url=db_url)]
    keys = [unique("race") for _ in range(10)]
    clients = [s.client() for s in servers]
    try:

        def hit(i: int) -> tuple[int, list[dict[str, Any]]]:
            c = clients[i % 2]
            r = c.post("/api/v1/subjects", json=[{"key": k, "displayName": f"d{i}"} for k in keys])
            return r.status_code, r.json()

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(hit, range(16)))
        assert all(status == 200 for status, _ in results), results
        ids = {s["key"]: s["id"] for s in clients[0].get("/api/v1/subjects").json()}
        assert set(ids) == set(keys)
        for _, body in results:
            assert {s["key"]: s["id"] for s in body} == ids
    finally:
        for c in clients:
            c.close()
