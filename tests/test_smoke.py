"""The server starts on each backend and speaks the wire conventions."""

from __future__ import annotations

import httpx


def test_readyz_reports_backend(client: httpx.Client, backend: str) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()["database"] == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]


def test_unknown_route_is_problem_404(client: httpx.Client) -> None:
    r = client.get("/api/v1/no-such-thing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404


def test_wrong_method_is_problem_405(client: httpx.Client) -> None:
    r = client.delete("/healthz")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Method Not Allowed"
