"""The served OpenAPI document, assembled from one YAML fragment per resource.

``openapi/base.yaml`` holds the info and shared components; every other ``openapi/*.yaml``
contributes ``paths`` and ``components`` entries (schemas, parameters, responses). A test
checks that every route the app serves is documented and every documented path is served.

What each operation needs comes from the one route policy (``http/auth_policy.py``), so the
document cannot disagree with it: public operations get ``security: []``, the others list
``x-required-scopes`` and the guard's 401 and 403 answers, and those with a request body its 415.

Two answers follow from the shape of an operation, so they are added where a fragment leaves
them out: an operation with parameters or a request body can answer 400 (a parameter or field
breaks a rule: ``http/params.py``), and one with a path parameter 404 (nothing by that id).
The console's operations are HTML pages and forms, never problem+json: their fragment lists
their answers itself.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from allotment.http.auth_policy import CHANGE, requirement

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_REF = "#/components/responses/"


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    folder = resources.files("allotment.http") / "openapi"
    doc: dict[str, Any] = {}
    fragments = sorted(  # base.yaml first: the others add to its components
        (e for e in folder.iterdir() if e.name.endswith(".yaml")),
        key=lambda e: (e.name != "base.yaml", e.name),
    )
    for entry in fragments:
        part = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        if entry.name == "base.yaml":
            doc = {**part, **doc}
            continue
        doc.setdefault("paths", {}).update(part.get("paths", {}))
        for section, entries in part.get("components", {}).items():
            doc.setdefault("components", {}).setdefault(section, {}).update(entries)
    doc.setdefault("paths", {})
    for path, item in doc["paths"].items():
        for method in _METHODS:
            if isinstance(item, dict) and isinstance(item.get(method), dict):
                if not requirement(method.upper(), path).console:  # HTML: its fragment says
                    _with_shape_answers(path, item, item[method])
                _with_auth(path, method.upper(), item[method])
    return doc


def _with_shape_answers(path: str, item: dict[str, Any], op: dict[str, Any]) -> None:
    if not item.get("parameters") and not op.get("parameters") and "requestBody" not in op:
        return
    responses = op.setdefault("responses", {})
    responses.setdefault("400", {"$ref": _REF + "BadRequest"})
    if "{" in path:
        responses.setdefault("404", {"$ref": _REF + "NotFound"})


def _with_auth(path: str, method: str, op: dict[str, Any]) -> None:
    req = requirement(method, path)
    if req.public:
        op["security"] = []
        return
    if req.portal or req.console:  # they check their own token / session (their fragments say)
        return
    op["x-required-scopes"] = req.needed()
    responses = op.setdefault("responses", {})
    responses.setdefault("401", {"$ref": _REF + "Unauthorized"})
    responses.setdefault("403", {"$ref": _REF + "Forbidden"})
    if method in CHANGE and "requestBody" in op:
        responses.setdefault("415", {"$ref": _REF + "UnsupportedMediaType"})
