"""The served OpenAPI document, assembled from one YAML fragment per resource.

``openapi/base.yaml`` holds the info and shared components; every other ``openapi/*.yaml``
contributes ``paths`` and ``components`` entries (schemas, parameters, responses). A test
checks that every route the app serves is documented and every documented path is served.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    folder = resources.files("allotment.http") / "openapi"
    doc: dict[str, Any] = {}
    fragments = sorted(
        (e for e in folder.iterdir() if e.name.endswith(".yaml")), key=lambda e: e.name
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
    return doc
