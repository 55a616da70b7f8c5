"""Meter definitions (placeholder: the metering work replaces this module)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from allotment.domain.errors import InvalidInput


@dataclass(frozen=True)
class MeterDefinition:
    slug: str


def parse_meter_definition(raw: Mapping[str, Any]) -> MeterDefinition:
    slug = raw.get("slug")
    if not isinstance(slug, str) or not slug:
        raise InvalidInput("slug: required", field="slug")
    return MeterDefinition(slug=slug)
