"""Features: the thing an entitlement entitles (api-contract §5). Pure rules, no IO.

A feature optionally points at a meter (by slug); only then can metered entitlements use it.
Group-by filters narrow the meter's usage to the rows whose group values match:

* ``meterGroupByFilters`` (deprecated) is a plain ``{groupKey: value}`` map;
* ``advancedMeterGroupByFilters`` maps a group key to a filter object. We support the
  equality operator ``{"$eq": value}`` — the form ``meterGroupByFilters`` is derived into —
  and reject every other operator with a 400 naming it, rather than accept a filter the usage
  query could not honour.

Both wire forms are derived from the one stored equality map, so a feature created with
either shows both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from allotment.domain.errors import InvalidInput
from allotment.domain.ids import is_ulid

KEY_PATTERN = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
KEY_MAX_LENGTH = 64
NAME_MAX_LENGTH = 1024
FEATURE_AGGREGATIONS = ("SUM", "COUNT", "UNIQUE_COUNT", "LATEST")
"""Meter aggregations a feature may use (the burn-down engine supports exactly these)."""
SUPPORTED_FILTER_OPERATORS = ("$eq",)


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    key: str
    name: str
    meter_slug: str | None
    group_filters: Mapping[str, str] | None
    """Equality filters on the meter's group-by keys (None when unset)."""
    metadata: Mapping[str, str] | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None

    @property
    def is_metered(self) -> bool:
        return self.meter_slug is not None

    def advanced_filters(self) -> dict[str, dict[str, str]] | None:
        if not self.group_filters:
            return None
        return {k: {"$eq": v} for k, v in self.group_filters.items()}


def validate_key(value: Any, field: str = "key") -> str:
    """A slug (``^[a-z0-9]+(?:_[a-z0-9]+)*$``, 1..64 characters) that is not a ULID."""
    if not isinstance(value, str) or value == "":
        raise InvalidInput(f"{field}: required, a non-empty string", field=field)
    if len(value) > KEY_MAX_LENGTH:
        raise InvalidInput(
            f"{field}: at most {KEY_MAX_LENGTH} characters, got {len(value)}", field=field
        )
    if not KEY_PATTERN.match(value):
        raise InvalidInput(f"{field}: {value!r} must match ^[a-z0-9]+(?:_[a-z0-9]+)*$", field=field)
    if is_ulid(value):
        raise InvalidInput(
            f"{field}: {value!r} must not be a ULID (ids and keys must stay distinguishable)",
            field=field,
        )
    return value


def validate_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("name: required, a non-empty string", field="name")
    if len(value) > NAME_MAX_LENGTH:
        raise InvalidInput(f"name: at most {NAME_MAX_LENGTH} characters", field="name")
    return value


def validate_string_map(value: Any, field: str) -> dict[str, str] | None:
    """A JSON object of string values; ``null``/absent/empty → None (absent on the wire)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be an object of strings", field=field)
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidInput(f"{field}.{k}: must be a string", field=f"{field}.{k}")
        out[str(k)] = v
    return out or None


def parse_advanced_filters(value: Any) -> dict[str, str] | None:
    """``advancedMeterGroupByFilters`` → equality map; only ``$eq`` is supported."""
    field = "advancedMeterGroupByFilters"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: must be an object", field=field)
    out: dict[str, str] = {}
    for key, flt in value.items():
        where = f"{field}.{key}"
        if not isinstance(flt, dict) or not flt:
            raise InvalidInput(f"{where}: must be a filter object such as {{\"$eq\": \"v\"}}",
                               field=where)  # fmt: skip
        operators = [op for op in flt if flt[op] is not None]
        unsupported = [op for op in operators if op not in SUPPORTED_FILTER_OPERATORS]
        if unsupported:
            raise InvalidInput(
                f"{where}: operator {unsupported[0]} is not supported (supported: $eq)",
                field=where,
            )
        if len(operators) != 1 or not isinstance(flt["$eq"], str):
            raise InvalidInput(f"{where}: $eq must be a string", field=where)
        out[str(key)] = flt["$eq"]
    return out or None


def merge_filters(
    simple: Mapping[str, str] | None, advanced: Mapping[str, str] | None
) -> dict[str, str] | None:
    """The advanced form takes precedence when non-empty (OpenMeter's rule)."""
    if advanced:
        return dict(advanced)
    return dict(simple) if simple else None


def validate_meter_for_feature(
    meter_slug: str, aggregation: str, group_by_keys: set[str], filters: Mapping[str, str] | None
) -> None:
    """The meter's aggregation must suit the engine; filter keys must be its group-by keys."""
    if aggregation not in FEATURE_AGGREGATIONS:
        raise InvalidInput(
            f"meterSlug: meter {meter_slug!r} has aggregation {aggregation}; features need one "
            f"of {', '.join(FEATURE_AGGREGATIONS)}",
            field="meterSlug",
        )
    for key in sorted(filters or {}):
        if key not in group_by_keys:
            known = ", ".join(sorted(group_by_keys)) or "none"
            raise InvalidInput(
                f"meterGroupByFilters: {key!r} is not a groupBy key of meter {meter_slug!r} "
                f"(groupBy keys: {known})",
                field="meterGroupByFilters",
            )
