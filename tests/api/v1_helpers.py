"""Small helpers of the /v1 API tests (catalog.md §1 conventions checked on every answer)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_features import ok
from tests.support import unique

__all__ = ["feature", "meter", "ok", "plan", "v1_problem"]


def v1_problem(r: httpx.Response, status: int, code: str, field: str | None = None,
               *words: str) -> dict[str, Any]:  # fmt: skip
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    if field is not None:
        assert body.get("field") == field, body
    for word in words:
        assert word in body.get("detail", ""), f"{word!r} not in {body}"
    return body


def feature(c: httpx.Client, kind: str = "NUMBER", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"reference": unique("f"), "name": "F", "type": kind, **extra}
    out: dict[str, Any] = ok(c.post("/v1/features", json=body), 201)
    return out


def meter(c: httpx.Client, aggregation: str = "SUM") -> str:
    slug = unique("m")
    body: dict[str, Any] = {"slug": slug, "aggregation": aggregation, "eventType": slug}
    if aggregation != "COUNT":
        body["valueProperty"] = "$.value"
    r = c.post("/api/v1/meters", json=body)
    assert r.status_code in (200, 201), r.text
    return slug


def plan(c: httpx.Client, entitlements: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"reference": unique("p"), "name": "Plan", "entitlements": entitlements, **extra}
    out: dict[str, Any] = ok(c.post("/v1/pricing-plans", json=body), 201)
    return out
