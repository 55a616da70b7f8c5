"""Every /v1 route is in the served OpenAPI document (and every documented /v1 path is served)."""

from __future__ import annotations

import httpx
from starlette.routing import Route

from allotment.http.app import all_routes


def test_every_v1_route_is_documented(client: httpx.Client) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    served: set[tuple[str, str]] = set()
    for route in all_routes():
        if isinstance(route, Route) and route.path.startswith("/v1/"):
            for method in route.methods or ():
                if method != "HEAD":
                    served.add((route.path, method.lower()))
    documented = {
        (path, method)
        for path, ops in paths.items()
        if path.startswith("/v1/")
        for method in ops
        if method != "parameters"
    }
    assert served == documented
