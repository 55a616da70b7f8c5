"""Meter definitions, the JSONPath subset they use, and value extraction from event data.

Pure: stdlib only. Public names used by other modules (keep them stable):

* :class:`Aggregation`, :class:`MeterDefinition`, :class:`Meter` (a stored definition: id,
  metadata, timestamps), :func:`parse_meter_definition`;
* :func:`compile_path` / :func:`lookup` (the JSONPath subset ``$.a.b``, ``$.a[0]``,
  ``$['key']``), :data:`MISSING`;
* :func:`extract` → :class:`Extracted` or an OpenMeter-style validation message (``str``);
* :func:`group_key` / :func:`decode_group_key`: the canonical text form of a meter's groupBy
  values used as ``group_key`` in the usage rollup tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

from allotment.domain.decimals import out_of_range
from allotment.domain.errors import InvalidInput
from allotment.domain.timeutil import parse_rfc3339

SLUG_PATTERN: Final = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
SLUG_MAX_LENGTH: Final = 64
GROUP_BY_KEY_PATTERN: Final = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_]*$")
DESCRIPTION_MAX_LENGTH: Final = 1024
NAME_MAX_LENGTH: Final = 256
EVENT_TYPE_MAX_LENGTH: Final = 256
GROUP_BY_KEYS_MAX: Final = 64


class Aggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    AVG = "AVG"
    MIN = "MIN"
    MAX = "MAX"
    LATEST = "LATEST"


# ---------------------------------------------------------------- JSONPath subset


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What :func:`lookup` returns when the path does not exist in the document."""

PathStep = str | int
_NAME_STEP = re.compile(r"\.([^.\[\]*]+)")
_INDEX_STEP = re.compile(r"\[(\d+)\]")
_QUOTED_STEP = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_UNESCAPE = re.compile(r"\\(.)")


def compile_path(path: str, field_name: str = "path") -> tuple[PathStep, ...]:
    """Parse ``$``, ``$.a.b``, ``$.a[0]``, ``$['key']`` / ``$["key"]`` into lookup steps.

    Raises :class:`InvalidInput` naming ``field_name`` for anything else.
    """
    if not path.startswith("$"):
        raise InvalidInput(f'{field_name}: JSONPath {path!r} must start with "$"', field=field_name)
    steps: list[PathStep] = []
    pos = 1
    while pos < len(path):
        m = _NAME_STEP.match(path, pos)
        if m is not None:
            steps.append(m.group(1))
            pos = m.end()
            continue
        m = _INDEX_STEP.match(path, pos)
        if m is not None:
            steps.append(int(m.group(1)))
            pos = m.end()
            continue
        m = _QUOTED_STEP.match(path, pos)
        if m is not None:
            raw = m.group(1) if m.group(1) is not None else m.group(2)
            steps.append(_UNESCAPE.sub(r"\1", raw))
            pos = m.end()
            continue
        raise InvalidInput(
            f"{field_name}: unsupported JSONPath {path!r} at position {pos} "
            "(supported: $.a.b, $.a[0], $['key'])",
            field=field_name,
        )
    return tuple(steps)


def lookup(document: Any, steps: tuple[PathStep, ...]) -> Any:
    """The value at ``steps`` in a decoded JSON document, or :data:`MISSING`."""
    current = document
    for step in steps:
        if isinstance(step, str):
            if not isinstance(current, dict) or step not in current:
                return MISSING
            current = current[step]
        else:
            if not isinstance(current, list) or step >= len(current):
                return MISSING
            current = current[step]
    return current


# ---------------------------------------------------------------- definitions


@dataclass(frozen=True, kw_only=True)
class MeterDefinition:
    """What a meter measures. ``name`` defaults to the slug."""

    slug: str
    aggregation: Aggregation
    event_type: str
    name: str = ""
    description: str | None = None
    value_property: str | None = None
    group_by: dict[str, str] = field(default_factory=dict)
    event_from: datetime | None = None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.slug)
        value_steps = compile_path(self.value_property) if self.value_property else None
        group_steps = tuple(
            (key, compile_path(path)) for key, path in sorted(self.group_by.items())
        )
        object.__setattr__(self, "_value_steps", value_steps)
        object.__setattr__(self, "_group_steps", group_steps)

    @property
    def value_steps(self) -> tuple[PathStep, ...] | None:
        return self.__dict__["_value_steps"]  # type: ignore[no-any-return]

    @property
    def group_steps(self) -> tuple[tuple[str, tuple[PathStep, ...]], ...]:
        return self.__dict__["_group_steps"]  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class Meter(MeterDefinition):
    """A stored meter: a definition plus identity, metadata and lifecycle timestamps."""

    id: str
    metadata: dict[str, str] | None = None
    managed_by: str = "api"
    """``api`` (created through the API) or ``config`` (synced from the config file)."""
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None

    @property
    def is_config(self) -> bool:
        return self.managed_by == "config"


def _optional_str(raw: Mapping[str, Any], key: str, max_length: int) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{key}: must be a string", field=key)
    if len(value) > max_length:
        raise InvalidInput(f"{key}: must be at most {max_length} characters", field=key)
    return value


def validate_slug(slug: object, field_name: str = "slug") -> str:
    if not isinstance(slug, str) or not slug:
        raise InvalidInput(f"{field_name}: required, a non-empty string", field=field_name)
    if len(slug) > SLUG_MAX_LENGTH:
        raise InvalidInput(
            f"{field_name}: must be at most {SLUG_MAX_LENGTH} characters", field=field_name
        )
    if SLUG_PATTERN.match(slug) is None:
        raise InvalidInput(
            f"{field_name}: {slug!r} must match ^[a-z0-9]+(?:_[a-z0-9]+)*$", field=field_name
        )
    return slug


def parse_aggregation(value: object) -> Aggregation:
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            "aggregation: required, one of " + ", ".join(Aggregation), field="aggregation"
        )
    try:
        return Aggregation(value)
    except ValueError:
        raise InvalidInput(
            f"aggregation: {value!r} is not one of " + ", ".join(Aggregation), field="aggregation"
        ) from None


def parse_event_type(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("eventType: required, a non-empty string", field="eventType")
    if len(value) > EVENT_TYPE_MAX_LENGTH:
        raise InvalidInput(
            f"eventType: must be at most {EVENT_TYPE_MAX_LENGTH} characters", field="eventType"
        )
    return value


def parse_group_by(value: object, value_property: str | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("groupBy: must be an object of name -> JSONPath", field="groupBy")
    if len(value) > GROUP_BY_KEYS_MAX:
        raise InvalidInput(f"groupBy: at most {GROUP_BY_KEYS_MAX} keys", field="groupBy")
    out: dict[str, str] = {}
    for key, path in value.items():
        if not isinstance(key, str) or GROUP_BY_KEY_PATTERN.match(key) is None:
            raise InvalidInput(
                f"groupBy: key {key!r} must match ^[a-zA-Z_][0-9a-zA-Z_]*$", field="groupBy"
            )
        where = f"groupBy.{key}"
        if not isinstance(path, str) or not path:
            raise InvalidInput(f"{where}: must be a JSONPath string", field=where)
        compile_path(path, where)
        if value_property is not None and path == value_property:
            raise InvalidInput(
                f"{where}: JSONPath {path!r} must not be the same as valueProperty", field=where
            )
        out[key] = path
    return out


def parse_event_from(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML decodes timestamps itself
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str):
        raise InvalidInput("eventFrom: must be an RFC 3339 date-time string", field="eventFrom")
    return parse_rfc3339(value, "eventFrom")


def parse_value_property(value: object, aggregation: Aggregation) -> str | None:
    if aggregation is Aggregation.COUNT:
        if value is not None and value != "":
            raise InvalidInput(
                "valueProperty: must not be set for a COUNT meter", field="valueProperty"
            )
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            f"valueProperty: required for a {aggregation} meter", field="valueProperty"
        )
    compile_path(value, "valueProperty")
    return value


def parse_meter_definition(raw: Mapping[str, Any]) -> MeterDefinition:
    """Validate a meter from the config file or a create request (wire field names).

    Unknown keys are ignored. Every error is an :class:`InvalidInput` naming the field.
    """
    slug = validate_slug(raw.get("slug"))
    aggregation = parse_aggregation(raw.get("aggregation"))
    event_type = parse_event_type(raw.get("eventType"))
    name = _optional_str(raw, "name", NAME_MAX_LENGTH)
    description = _optional_str(raw, "description", DESCRIPTION_MAX_LENGTH)
    value_property = parse_value_property(raw.get("valueProperty"), aggregation)
    group_by = parse_group_by(raw.get("groupBy"), value_property)
    event_from = parse_event_from(raw.get("eventFrom"))
    return MeterDefinition(
        slug=slug,
        aggregation=aggregation,
        event_type=event_type,
        name=name or slug,
        description=description,
        value_property=value_property,
        group_by=group_by,
        event_from=event_from,
    )


# ---------------------------------------------------------------- extraction


@dataclass(frozen=True, slots=True)
class Extracted:
    """What one event contributes to one meter.

    ``value``: the numeric value (SUM/AVG/MIN/MAX/LATEST), else None. ``unique``: the
    stringified value (UNIQUE_COUNT), else None. ``groups``: every groupBy key of the meter
    with its string value (``""`` when the path is missing or null).
    """

    value: Decimal | None
    unique: str | None
    groups: dict[str, str]


_DECIMAL_TEXT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_NAN_TEXT = frozenset({"nan", "+nan", "-nan"})
_INF_TEXT = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


def render(value: Any) -> str:
    """A JSON value as text, the way Go's ``%v`` shows a decoded JSON value (approximately):
    strings verbatim, ``true``/``false``, numbers in plain form, ``""`` for null, compact JSON
    for objects and arrays."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _plain_text(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_json_default)


def _json_default(obj: object) -> object:
    if isinstance(obj, Decimal):
        return float(obj)
    raise TypeError(type(obj).__name__)


def _plain_text(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def parse_value(raw: Any) -> Decimal | str:
    """A meter value (JSON number or numeric string) as an exact Decimal, or the error text."""
    if isinstance(raw, bool):
        return f"invalid event: value cannot be parsed as float64: {render(raw)}"
    if isinstance(raw, Decimal):
        if raw.is_nan():
            return "invalid event: value cannot be NaN"
        if raw.is_infinite():
            return "invalid event: value cannot be infinity"
        return raw
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if raw != raw:
            return "invalid event: value cannot be NaN"
        if raw in (float("inf"), float("-inf")):
            return "invalid event: value cannot be infinity"
        return Decimal(repr(raw))
    if raw is None:
        return "invalid event: value cannot be null"
    if isinstance(raw, str):
        text = raw
        lowered = text.lower()
        if lowered in _NAN_TEXT:
            return "invalid event: value cannot be NaN"
        if lowered in _INF_TEXT:
            return "invalid event: value cannot be infinity"
        if _DECIMAL_TEXT.match(text) is not None:
            try:
                number = Decimal(text)
            except InvalidOperation:  # an exponent past any Decimal's
                return f"invalid event: value out of range: {text[:40]}"
            # the JSON numbers of data are checked at ingest (json_bounds); a string here
            rule = out_of_range(number)
            if rule is not None:
                return f"invalid event: value out of range: {text[:40]} {rule}"
            return number
    return f"invalid event: value cannot be parsed as float64: {render(raw)}"


def extract(meter: MeterDefinition, data: Any) -> Extracted | str:
    """What ``data`` (the event's decoded ``data``, or None) contributes to ``meter``.

    Returns an :class:`Extracted`, or OpenMeter's validation message when the event does not
    fit the meter (then the event is stored but not aggregated for this meter).
    """
    groups: dict[str, str] = {}
    for key, path in meter.group_steps:
        found = lookup(data, path)
        # a string is its own rendering (the common group value: two calls fewer)
        groups[key] = found if type(found) is str else render(_or_empty(found))
    if meter.aggregation is Aggregation.COUNT:
        return Extracted(None, None, groups)
    steps = meter.value_steps
    if data is None or steps is None:
        return "invalid event: null and missing value property"
    raw = lookup(data, steps)
    if raw is MISSING:
        return f'invalid event: missing value property: "{meter.value_property}"'
    if meter.aggregation is Aggregation.UNIQUE_COUNT:
        if raw is None:
            return "invalid event: value cannot be null"
        return Extracted(None, render(raw), groups)
    value = parse_value(raw)
    if isinstance(value, str):
        return value
    return Extracted(value, None, groups)


def _or_empty(value: Any) -> Any:
    return None if value is MISSING else value


def group_key(groups: Mapping[str, str]) -> str:
    """Canonical JSON of a meter's groupBy values: sorted keys, compact, UTF-8 (``{}`` if none).

    This is the ``group_key`` column of ``usage_minute`` and ``usage_unique``.
    """
    return json.dumps(dict(groups), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_group_key(key: str) -> dict[str, str]:
    """The groupBy values a ``group_key`` was made from."""
    decoded = json.loads(key)
    if not isinstance(decoded, dict):
        raise ValueError(f"not a group key: {key!r}")
    return {str(k): str(v) for k, v in decoded.items()}
