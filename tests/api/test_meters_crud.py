"""Meter CRUD against a real server, on every backend: shape, validation naming the field,
404/409, config meters protected, backfill on create, rebuild on groupBy change, soft delete."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.domain import limits
from allotment.domain.ids import is_ulid
from allotment.storage.database import Database, open_database
from tests.support import ServerProcess, fold_tail, unique


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/meters", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    meter: dict[str, Any] = r.json()
    return meter


def problem(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status
    return str(r.json().get("detail", ""))


def sum_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slug": unique("m"),
        "aggregation": "SUM",
        "eventType": unique("type"),
        "valueProperty": "$.tokens",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(scope="module")
def dbs() -> Iterator[Callable[[str], Database]]:
    opened: dict[str, Database] = {}

    def get(url: str) -> Database:
        if url not in opened:
            opened[url] = open_database(url)
        return opened[url]

    yield get
    for db in opened.values():
        db.close()


def rollup_groups(db: Database, meter_id: str) -> dict[str, tuple[int, Decimal]]:
    fold_tail(db)
    with db.read() as tx:
        rows = tx.execute(
            "SELECT group_key, count, sum FROM usage_minute WHERE meter_id = ?", (meter_id,)
        )
    out: dict[str, tuple[int, Decimal]] = {}
    for key, count, total in rows:
        c, s = out.get(key, (0, Decimal(0)))
        out[key] = (c + int(count), s + (Decimal(str(total)) if total is not None else 0))
    return out


def ingest(client: httpx.Client, etype: str, datas: list[dict[str, Any]]) -> None:
    t = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    batch = [
        {
            "specversion": "1.0",
            "id": unique("e"),
            "source": "t",
            "type": etype,
            "subject": "s",
            "time": t,
            "data": d,
        }
        for d in datas
    ]
    r = client.post(
        "/api/v1/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert r.status_code == 204, r.text


# ---------------------------------------------------------------- create / get / list


def test_create_returns_200_with_the_meter(client: httpx.Client) -> None:
    body = sum_body(
        description="AI tokens",
        groupBy={"model": "$.model"},
        metadata={"team": "ai"},
        eventFrom="2024-01-01T01:00:00+01:00",
    )
    m = create(client, **body)
    assert is_ulid(m["id"])
    assert m == {
        "id": m["id"],
        "slug": body["slug"],
        "name": body["slug"],
        "description": "AI tokens",
        "aggregation": "SUM",
        "eventType": body["eventType"],
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model"},
        "eventFrom": "2024-01-01T00:00:00Z",
        "metadata": {"team": "ai"},
        "createdAt": m["createdAt"],
        "updatedAt": m["createdAt"],
    }
    assert m["createdAt"].endswith("Z")
    for ref in (m["id"], m["slug"]):
        r = client.get(f"/api/v1/meters/{ref}")
        assert r.status_code == 200
        assert r.json() == m


def test_minimal_count_meter_omits_unset_fields(client: httpx.Client) -> None:
    m = create(client, slug=unique("m"), aggregation="COUNT", eventType="x", name="Requests")
    assert set(m) == {"id", "slug", "name", "aggregation", "eventType", "createdAt", "updatedAt"}
    assert m["name"] == "Requests"


def test_duplicate_slug_is_409(client: httpx.Client) -> None:
    body = sum_body()
    create(client, **body)
    assert body["slug"] in problem(client.post("/api/v1/meters", json=body), 409)
    assert "already exists" in problem(
        client.post("/api/v1/meters", json={**body, "slug": "tokens_total"}), 409
    )


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"slug": None}, "slug"),
        ({"slug": "Bad-Slug"}, "slug"),
        ({"slug": "a" * 65}, "slug"),
        ({"aggregation": "MEDIAN"}, "aggregation"),
        ({"aggregation": None}, "aggregation"),
        ({"eventType": None}, "eventType"),
        ({"eventType": ""}, "eventType"),
        ({"valueProperty": None}, "valueProperty"),
        ({"valueProperty": "tokens"}, "valueProperty"),
        ({"aggregation": "COUNT"}, "valueProperty"),
        ({"groupBy": {"bad-key": "$.a"}}, "groupBy"),
        ({"groupBy": {"model": "model"}}, "groupBy.model"),
        ({"groupBy": {"t": "$.tokens"}}, "groupBy.t"),
        ({"description": "x" * 1025}, "description"),
        ({"eventFrom": "tomorrow"}, "eventFrom"),
        ({"metadata": {"a": 1}}, "metadata.a"),
        ({"metadata": ["a"]}, "metadata"),
    ],
)
def test_invalid_create_is_400_naming_the_field(
    client: httpx.Client, over: dict[str, Any], field: str
) -> None:
    body = sum_body(**over)
    detail = problem(client.post("/api/v1/meters", json=body), 400)
    assert detail.startswith(field)
    if isinstance(body.get("slug"), str) and len(body["slug"]) <= 64:
        assert client.get(f"/api/v1/meters/{body['slug']}").status_code in (400, 404)


def test_create_limits_at_n(client: httpx.Client) -> None:
    slug = ("m" + unique("")).ljust(64, "x")
    assert len(slug) == 64
    m = create(client, **sum_body(slug=slug, description="d" * 1024))
    assert m["slug"] == slug


@pytest.mark.parametrize("body", [b"{", b"[]", b"", b'"x"'])
def test_create_with_malformed_body_is_400(client: httpx.Client, body: bytes) -> None:
    r = client.post("/api/v1/meters", content=body, headers={"content-type": "application/json"})
    problem(r, 400)


def test_get_unknown_is_404_and_bad_reference_400(client: httpx.Client) -> None:
    assert "nope" in problem(client.get(f"/api/v1/meters/{unique('nope')}"), 404)
    problem(client.get("/api/v1/meters/01JAAAAAAAAAAAAAAAAAAAAAAA"), 404)
    assert "meterIdOrSlug" in problem(client.get("/api/v1/meters/Not-A-Slug"), 400)


def test_list_is_ordered_by_slug_and_hides_deleted(client: httpx.Client) -> None:
    prefix = unique("l")
    made = [create(client, **sum_body(slug=f"{prefix}_{c}")) for c in "cab"]
    r = client.get("/api/v1/meters")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    slugs = [m["slug"] for m in r.json()]
    assert slugs == sorted(slugs)
    assert {"tokens_total", "api_requests_total"} <= set(slugs)
    assert [s for s in slugs if s.startswith(prefix)] == [
        f"{prefix}_a",
        f"{prefix}_b",
        f"{prefix}_c",
    ]
    r = client.delete(f"/api/v1/meters/{made[0]['id']}")
    assert r.status_code == 204
    assert r.content == b""
    slugs = [m["slug"] for m in client.get("/api/v1/meters").json()]
    assert f"{prefix}_c" not in slugs
    listed = client.get("/api/v1/meters", params={"includeDeleted": "true"}).json()
    deleted = [m for m in listed if m["slug"] == f"{prefix}_c"]
    assert len(deleted) == 1
    assert deleted[0]["deletedAt"].endswith("Z")


def test_list_limit_at_n_and_n_plus_1(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server(config=None)
    n = limits.METERS_LIST_MAX
    with srv.client() as c:

        def make(i: int) -> None:
            r = c.post(
                "/api/v1/meters",
                json={"slug": f"m_{i:05d}", "aggregation": "COUNT", "eventType": "e"},
            )
            assert r.status_code == 200, r.text

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(make, range(n)))
        listed = c.get("/api/v1/meters").json()
        assert len(listed) == n
        make(n)
        listed = c.get("/api/v1/meters").json()
        assert len(listed) == n
        assert listed[-1]["slug"] == f"m_{n - 1:05d}"


# ---------------------------------------------------------------- update / delete


def test_update_replaces_mutable_fields(client: httpx.Client) -> None:
    m = create(client, **sum_body(description="old", metadata={"a": "1"}, groupBy={"g": "$.g"}))
    r = client.put(
        f"/api/v1/meters/{m['slug']}",
        json={
            "name": "New name",
            "description": "new",
            "metadata": {"b": "2"},
            "groupBy": {"g": "$.g", "h": "$.h"},
            "slug": m["slug"],
            "aggregation": "SUM",
        },
    )
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["id"] == m["id"]
    assert (u["name"], u["description"], u["metadata"]) == ("New name", "new", {"b": "2"})
    assert u["groupBy"] == {"g": "$.g", "h": "$.h"}
    assert u["createdAt"] == m["createdAt"]
    assert client.get(f"/api/v1/meters/{m['id']}").json() == u
    r = client.put(f"/api/v1/meters/{m['id']}", json={})
    cleared = r.json()
    assert cleared["name"] == m["slug"]
    assert "description" not in cleared
    assert "metadata" not in cleared
    assert "groupBy" not in cleared


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "other_slug"}, "slug"),
        ({"aggregation": "MAX"}, "aggregation"),
        ({"eventType": "changed"}, "eventType"),
        ({"valueProperty": "$.other"}, "valueProperty"),
        ({"groupBy": {"bad-key": "$.x"}}, "groupBy"),
        ({"groupBy": {"t": "$.tokens"}}, "groupBy.t"),
        ({"description": "x" * 1025}, "description"),
        ({"metadata": {"a": 1}}, "metadata.a"),
    ],
)
def test_invalid_update_is_400_and_changes_nothing(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    m = create(client, **sum_body())
    assert problem(client.put(f"/api/v1/meters/{m['slug']}", json=body), 400).startswith(field)
    assert client.get(f"/api/v1/meters/{m['slug']}").json() == m


def test_update_and_delete_unknown_are_404(client: httpx.Client) -> None:
    slug = unique("nope")
    problem(client.put(f"/api/v1/meters/{slug}", json={}), 404)
    problem(client.delete(f"/api/v1/meters/{slug}"), 404)


def test_config_meters_cannot_be_changed_or_deleted(client: httpx.Client) -> None:
    assert "config" in problem(client.put("/api/v1/meters/tokens_total", json={"name": "x"}), 409)
    assert "config" in problem(client.delete("/api/v1/meters/tokens_total"), 409)
    assert client.get("/api/v1/meters/tokens_total").json()["name"] == "tokens_total"


def test_delete_then_slug_can_be_reused(client: httpx.Client) -> None:
    body = sum_body()
    first = create(client, **body)
    assert client.delete(f"/api/v1/meters/{body['slug']}").status_code == 204
    problem(client.get(f"/api/v1/meters/{body['slug']}"), 404)
    problem(client.get(f"/api/v1/meters/{first['id']}"), 404)
    problem(client.delete(f"/api/v1/meters/{first['id']}"), 404)
    second = create(client, **body)
    assert second["id"] != first["id"]


# ---------------------------------------------------------------- backfill / rebuild


def test_create_backfills_and_group_by_change_rebuilds(
    client: httpx.Client, server: ServerProcess, dbs: Callable[[str], Database]
) -> None:
    etype = unique("type")
    ingest(client, etype, [{"tokens": i, "model": f"m{i % 2}"} for i in range(1, 7)])
    ingest(client, etype, [{"tokens": "bad"}, {"model": "m0"}])
    m = create(client, **sum_body(eventType=etype))
    db = dbs(server.db_url)
    assert rollup_groups(db, m["id"]) == {"{}": (6, Decimal(21))}
    r = client.put(f"/api/v1/meters/{m['id']}", json={"groupBy": {"model": "$.model"}})
    assert r.status_code == 200, r.text
    assert rollup_groups(db, m["id"]) == {
        '{"model":"m0"}': (3, Decimal(12)),
        '{"model":"m1"}': (3, Decimal(9)),
    }
    ingest(client, etype, [{"tokens": 100, "model": "m1"}])
    assert rollup_groups(db, m["id"])['{"model":"m1"}'] == (4, Decimal(109))
    assert client.delete(f"/api/v1/meters/{m['id']}").status_code == 204
    assert rollup_groups(db, m["id"]) == {}
