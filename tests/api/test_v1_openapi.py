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


def _nulls(node: object, path: str) -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in
                ([f"{path}/{k}"] if v is None else _nulls(v, f"{path}/{k}"))]  # fmt: skip
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _nulls(v, f"{path}[{i}]")]
    return []


def test_v1_fragments_have_no_stray_keys() -> None:
    """A comma or colon in an unquoted YAML flow value makes a key with a null value."""
    from importlib import resources

    import yaml

    folder = resources.files("allotment.http") / "openapi"
    for entry in folder.iterdir():
        if entry.name.startswith("v1_"):
            assert _nulls(yaml.safe_load(entry.read_text(encoding="utf-8")), entry.name) == []
