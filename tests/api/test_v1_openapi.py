"""The served OpenAPI document is valid OpenAPI 3.0.3 and true: every route the app serves is
in it (every method), every documented operation is served, and no fragment has a stray key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources

import httpx
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV30SpecValidator
from starlette.routing import BaseRoute, Mount, Route

from allotment.http.app import all_routes


def _served(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _served(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":  # Starlette adds HEAD to every GET
                    # a converter ({path:rest}) is Starlette's; the document names {path}
                    yield re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path), method.lower()
        else:  # a WebSocketRoute or a new kind: the document cannot describe it yet
            raise AssertionError(f"unexpected route type {type(route).__name__}")


def test_every_route_is_documented_and_every_operation_served(client: httpx.Client) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    documented = {
        (path, method)
        for path, ops in r.json()["paths"].items()
        for method in ops
        if method not in ("parameters", "summary", "description")
    }
    served = set(_served(all_routes()))
    assert sorted(served - documented) == []
    assert sorted(documented - served) == []


def test_the_served_document_is_valid_openapi_3_0_3(client: httpx.Client) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in OpenAPIV30SpecValidator(doc).iter_errors()]  # fmt: skip
    assert errors == []
    validate(doc, cls=OpenAPIV30SpecValidator)


def _nulls(node: object, path: str) -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in
                ([f"{path}/{k}"] if v is None else _nulls(v, f"{path}/{k}"))]  # fmt: skip
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _nulls(v, f"{path}[{i}]")]
    return []


def test_fragments_have_no_stray_keys() -> None:
    """A comma or colon in an unquoted YAML flow value makes a key with a null value."""
    folder = resources.files("allotment.http") / "openapi"
    stray = [
        p
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
        for p in _nulls(yaml.safe_load(entry.read_text(encoding="utf-8")), entry.name)
    ]
    assert stray == []
