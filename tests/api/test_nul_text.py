"""No text holds U+0000 (issue 12, found by the schemathesis run on PostgreSQL): a NUL in any
JSON body, event, query parameter, filter or path is a 400 naming where it is, on both
engines, and nothing is stored. A backslash followed by ``u0000`` is ordinary text."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support import unique

JSON = {"content-type": "application/json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


def _problem(r: httpx.Response, field: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert "U+0000" in body["detail"], body
    assert body["detail"].startswith(field), body


def _event(**over: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": unique("e"), "source": "nul", "type": "prompt",
            "subject": unique("s"), "data": {"tokens": 1, "model": "m"}, **over}  # fmt: skip


BODIES: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/features", {"key": "K", "name": "a\x00b"}, "name"),
    ("POST", "/api/v1/meters", {"slug": "K", "aggregation": "COUNT", "eventType": "t\x00"},
     "eventType"),
    ("POST", "/api/v1/subjects", [{"key": "K", "metadata": {"k": ["x", "y\x00"]}}],
     "body[0].metadata.k[1]"),
    ("POST", "/api/v1/customers", {"key": "K", "name": "n", "metadata": {"a\x00": "b"}},
     "metadata.a\\u0000"),
    ("POST", "/v1/features", {"reference": "K", "name": "N\x00", "type": "SWITCH"}, "name"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "field"), BODIES)
def test_a_nul_in_a_json_body_is_a_400_naming_the_member(
    client: httpx.Client, method: str, path: str, body: Any, field: str
) -> None:
    key = unique("k")
    text = json.dumps(body).replace('"K"', json.dumps(key))
    _problem(client.request(method, path, content=text, headers=JSON), field)
    assert key not in client.get(path.split("?")[0], params={"pageSize": 1000}).text


def test_a_nul_in_an_event_is_a_400_and_stores_no_event_of_the_batch(
    client: httpx.Client,
) -> None:
    subject = unique("s")
    good, bad = _event(subject=subject), _event(subject=subject, data={"model": "m\x00"})
    r = client.post("/api/v1/events", content=json.dumps([good, bad]), headers=BATCH)
    _problem(r, "events[1].data.model")
    r = client.post("/api/v1/events", content=json.dumps(_event(subject="s\x00")), headers=JSON)
    _problem(r, "event.subject")
    listed = client.get("/api/v1/events", params={"subject": subject})
    assert listed.status_code == 200
    assert listed.json() == []


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/events?subject=a%00b", "query parameter subject"),
        ("/api/v1/meters/tokens_total/query?subject=ok&filterGroupBy[model]=%00",
         "query parameter filterGroupBy[model]"),
        ("/api/v1/subjects/a%00b", "path"),
        ("/v1/customers/a%00b", "path"),
        ("/v1/features?limit=%00", "query parameter limit"),
    ],
)  # fmt: skip
def test_a_nul_in_the_path_or_a_query_parameter_is_a_400(
    client: httpx.Client, url: str, field: str
) -> None:
    r = client.get(url)
    _problem(r, field)
    if url.startswith("/v1/"):  # the /v1 problem shape (catalog.md §1)
        assert r.json()["code"] == "INVALID_INPUT"


def test_a_nul_in_a_json_filter_parameter_is_a_400(client: httpx.Client) -> None:
    url = "/api/v1/meters/tokens_total/query"
    r = client.get(
        url, params={"advancedMeterGroupByFilters": json.dumps({"model": {"$eq": "\x00"}})}
    )
    _problem(r, "advancedMeterGroupByFilters.model.$eq")
    r = client.get(url, params={"filterGroupBy": json.dumps({"model": "a\u0000"})})
    _problem(r, "filterGroupBy.model")


def test_a_backslash_u0000_spelled_out_is_ordinary_text(client: httpx.Client) -> None:
    key = unique("f")
    r = client.post("/api/v1/features", json={"key": key, "name": "\\u0000 is six characters"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "\\u0000 is six characters"
