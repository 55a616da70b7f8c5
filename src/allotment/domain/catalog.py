"""The `/v1` catalog (catalog.md §2–§3): typed features and the typed values plans give them.

Pure rules, no IO. A typed feature is a row of the one features table (the `/api/v1` feature
with ``key`` = reference) plus its type and type-specific fields:

* ``NUMBER``: a decimal ≥ 0 or ``"unlimited"``. With ``meter_reference`` it is a **budget**
  (that meter's usage per ``usage_period``); with ``rate_window`` a **rate limit**; neither: a
  plain number. A budget and a rate window together are refused (one meaning per feature).
* ``ENUM``: a non-empty subset of the feature's ``enum_values``.
* ``SWITCH``: ``true`` / ``false``.
* ``AMOUNT``: ``{"value": "25.00", "currency": "USD"}`` (``currency`` defaults to the feature's).

Features created on `/api/v1` have no stored type: they read as ``NUMBER`` budgets when metered
(period ``MONTH``) and ``SWITCH`` otherwise.

Every error names the wire field and carries a stable upper-case ``code`` (rendered on `/v1`).

About 500 lines on purpose: a feature's spec and the values plans give it are parsed against
the same four types and share their errors and codes; they change together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from allotment.domain import limits
from allotment.domain.decimals import parse_amount, plain
from allotment.domain.errors import Conflict, InvalidInput, NotFound
from allotment.domain.features import Feature, validate_key

FEATURE_TYPES = ("NUMBER", "ENUM", "SWITCH", "AMOUNT")
USAGE_PERIODS = ("DAY", "WEEK", "MONTH", "YEAR")
RATE_WINDOWS = ("SECOND", "MINUTE", "HOUR", "DAY")
VALUE_KEYS = {"NUMBER": "number", "ENUM": "enums", "SWITCH": "switch", "AMOUNT": "amount"}
UNLIMITED = "unlimited"
ENUM_VALUES_MAX = limits.ENUM_VALUES_MAX
ENUM_VALUE_MAX_LENGTH = 128
DESCRIPTION_MAX_LENGTH = 1024
PLAN_ENTITLEMENTS_MAX = limits.PLAN_ENTITLEMENTS_MAX
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
REFERENCE_PATTERN = re.compile(r"^[a-z0-9_.-]{1,64}$")
_FEATURE_FIELDS = frozenset(
    ("reference", "name", "type", "enum_values", "currency", "meter_reference",
     "usage_period", "rate_window", "description")
)  # fmt: skip


# ---------------------------------------------------------------- errors with /v1 codes


class CatalogInvalid(InvalidInput):
    code = "INVALID_INPUT"


class FeatureTypeInvalid(CatalogInvalid):
    code = "FEATURE_TYPE_INVALID"


class EnumValuesRequired(CatalogInvalid):
    code = "ENUM_VALUES_REQUIRED"


class EnumValuesInvalid(CatalogInvalid):
    code = "ENUM_VALUES_INVALID"


class FieldNotAllowed(CatalogInvalid):
    code = "FIELD_NOT_ALLOWED_FOR_TYPE"


class MeterNotFound(CatalogInvalid):
    code = "METER_NOT_FOUND"


class UnknownFeature(CatalogInvalid):
    """A plan or override names a feature that does not exist (400: bad input)."""

    code = "FEATURE_NOT_FOUND"


class EnumValueNotAllowed(CatalogInvalid):
    code = "ENUM_VALUE_NOT_ALLOWED"


class NumberInvalid(CatalogInvalid):
    code = "NUMBER_INVALID"


class SwitchInvalid(CatalogInvalid):
    code = "SWITCH_NOT_BOOLEAN"


class AmountInvalid(CatalogInvalid):
    code = "AMOUNT_INVALID"


class ValueMissing(CatalogInvalid):
    code = "VALUE_TYPE_MISMATCH"


class FeatureNotFound(NotFound):
    code = "FEATURE_NOT_FOUND"


class FeatureExists(Conflict):
    code = "FEATURE_ALREADY_EXISTS"


# ---------------------------------------------------------------- typed features


@dataclass(frozen=True, slots=True)
class TypedFeature:
    """A feature as `/v1` sees it: the shared row plus its type."""

    feature: Feature
    type: str
    enum_values: tuple[str, ...] | None = None
    currency: str | None = None
    usage_period: str | None = None
    rate_window: str | None = None
    description: str | None = None

    @property
    def reference(self) -> str:
        return self.feature.key

    @property
    def meter_reference(self) -> str | None:
        return self.feature.meter_slug

    @property
    def is_budget(self) -> bool:
        return self.type == "NUMBER" and self.feature.meter_slug is not None


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A validated `POST /v1/features` body (the meter is checked by the service)."""

    reference: str
    name: str
    type: str
    enum_values: tuple[str, ...] | None
    currency: str | None
    meter_reference: str | None
    usage_period: str | None
    rate_window: str | None
    description: str | None


def typed(
    feature: Feature,
    stored_type: str | None,
    enum_values: Sequence[str] | None,
    currency: str | None,
    usage_period: str | None,
    rate_window: str | None,
    description: str | None,
) -> TypedFeature:
    """The `/v1` view of a stored row; untyped (`/api/v1`) rows get their derived type."""
    if stored_type is None:
        if feature.meter_slug is not None:
            return TypedFeature(feature, "NUMBER", usage_period="MONTH")
        return TypedFeature(feature, "SWITCH")
    return TypedFeature(
        feature,
        stored_type,
        tuple(enum_values) if enum_values is not None else None,
        currency,
        usage_period,
        rate_window,
        description,
    )


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value == "":
        raise CatalogInvalid(f"{name}: must be a non-empty string", field=name)
    return value


def _choice(body: Mapping[str, Any], name: str, choices: Sequence[str]) -> str | None:
    value = _optional_str(body, name)
    if value is not None and value not in choices:
        raise CatalogInvalid(f"{name}: {value!r} is not one of {', '.join(choices)}", field=name)
    return value


def _not_for_type(kind: str, name: str) -> FieldNotAllowed:
    return FieldNotAllowed(f"{name}: not allowed on a {kind} feature", field=name)


def parse_enum_values(value: Any) -> tuple[str, ...]:
    field = "enum_values"
    if value is None:
        raise EnumValuesRequired(
            f"{field}: required for an ENUM feature (a non-empty list of strings)", field=field
        )
    if not isinstance(value, list) or not value:
        raise EnumValuesInvalid(f"{field}: must be a non-empty list of strings", field=field)
    if len(value) > ENUM_VALUES_MAX:
        raise EnumValuesInvalid(
            f"{field}: at most {ENUM_VALUES_MAX} values, got {len(value)}", field=field
        )
    seen: list[str] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise EnumValuesInvalid(f"{where}: must be a non-empty string", field=where)
        if len(item) > ENUM_VALUE_MAX_LENGTH:
            raise EnumValuesInvalid(
                f"{where}: at most {ENUM_VALUE_MAX_LENGTH} characters", field=where
            )
        if item in seen:
            raise EnumValuesInvalid(f"{where}: {item!r} is listed twice", field=where)
        seen.append(item)
    return tuple(seen)


def parse_feature_spec(body: Any) -> FeatureSpec:
    """Validate a `POST /v1/features` body; every error names its field."""
    if not isinstance(body, dict):
        raise CatalogInvalid("request body must be a JSON object", field="body")
    for name in body:
        if name not in _FEATURE_FIELDS:
            raise CatalogInvalid(f"{name}: unknown field", field=str(name))
    reference = validate_key(body.get("reference"), "reference")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 1024:
        raise CatalogInvalid("name: required, a non-empty string of at most 1024", field="name")
    kind = body.get("type")
    if kind not in FEATURE_TYPES:
        raise FeatureTypeInvalid(
            f"type: {kind!r} is not one of {', '.join(FEATURE_TYPES)}", field="type"
        )
    enum_values = None
    if kind == "ENUM":
        enum_values = parse_enum_values(body.get("enum_values"))
    elif body.get("enum_values") is not None:
        raise _not_for_type(kind, "enum_values")
    currency = _optional_str(body, "currency")
    if currency is not None:
        if kind != "AMOUNT":
            raise _not_for_type(kind, "currency")
        if not CURRENCY_PATTERN.match(currency):
            raise CatalogInvalid(
                f"currency: {currency!r} is not an ISO 4217 code (three capitals)",
                field="currency",
            )
    meter = _optional_str(body, "meter_reference")
    period = _choice(body, "usage_period", USAGE_PERIODS)
    window = _choice(body, "rate_window", RATE_WINDOWS)
    for field, given in (("meter_reference", meter), ("usage_period", period),
                         ("rate_window", window)):  # fmt: skip
        if given is not None and kind != "NUMBER":
            raise _not_for_type(kind, field)
    if period is not None and meter is None:
        raise CatalogInvalid(
            "usage_period: only with meter_reference (the period of a budget)",
            field="usage_period",
        )
    if meter is not None and window is not None:
        raise CatalogInvalid(
            "rate_window: a feature is either a budget (meter_reference) or a rate limit "
            "(rate_window), not both",
            field="rate_window",
        )
    if meter is not None and period is None:
        period = "MONTH"
    description = _optional_str(body, "description")
    if description is not None and len(description) > DESCRIPTION_MAX_LENGTH:
        raise CatalogInvalid(
            f"description: at most {DESCRIPTION_MAX_LENGTH} characters", field="description"
        )
    return FeatureSpec(
        reference, name, kind, enum_values, currency, meter, period, window, description
    )


# ---------------------------------------------------------------- typed values


@dataclass(frozen=True, slots=True)
class TypedValue:
    """One feature's value on a plan version or a subscription override.

    ``data`` is the wire form (``{"number": "600"}``, ``{"enums": [...]}``,
    ``{"switch": true}``, ``{"amount": {"value": "25.00", "currency": "USD"}}``), which is
    also what is stored."""

    feature_reference: str
    type: str
    data: Mapping[str, Any]

    @property
    def number(self) -> Decimal | None:
        """The NUMBER value; None when unlimited or not a NUMBER."""
        raw = self.data.get("number")
        if raw is None or raw == UNLIMITED:
            return None
        return Decimal(str(raw))

    @property
    def unlimited(self) -> bool:
        return self.data.get("number") == UNLIMITED

    @property
    def switch(self) -> bool:
        return bool(self.data.get("switch"))


def _number(value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip().lower() == UNLIMITED:
        return UNLIMITED
    try:
        amount = parse_amount(value, where)
    except InvalidInput as exc:
        raise NumberInvalid(
            f'{where}: {value!r} is not a number (a decimal >= 0 or "unlimited")', field=where
        ) from exc
    if amount < 0:
        raise NumberInvalid(f"{where}: {value!r} is negative; must be >= 0", field=where)
    return str(plain(amount))


def _amount(value: Any, feature: TypedFeature, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise AmountInvalid(
            f'{where}: must be an object {{"value": "25.00", "currency": "USD"}}',
            field=where,
        )
    for key in value:
        if key not in ("value", "currency"):
            raise AmountInvalid(f"{where}.{key}: unknown field", field=f"{where}.{key}")
    raw = value.get("value")
    try:
        amount = parse_amount(raw, f"{where}.value")
    except InvalidInput as exc:
        raise AmountInvalid(
            f"{where}.value: {raw!r} is not a number", field=f"{where}.value"
        ) from exc
    if amount < 0:
        raise AmountInvalid(f"{where}.value: {raw!r} is negative", field=f"{where}.value")
    currency = value.get("currency", feature.currency)
    if not isinstance(currency, str) or not CURRENCY_PATTERN.match(currency):
        raise AmountInvalid(
            f"{where}.currency: {currency!r} is not an ISO 4217 code (required when the "
            "feature has no default currency)",
            field=f"{where}.currency",
        )
    return {"value": format(amount, "f"), "currency": currency}


def parse_value(item: Mapping[str, Any], feature: TypedFeature, where: str) -> TypedValue:
    """The typed value in ``item`` (an entry of ``entitlements``) checked against the feature."""
    key = VALUE_KEYS[feature.type]
    others = [k for k in VALUE_KEYS.values() if k != key and item.get(k) is not None]
    if others:
        raise ValueMissing(
            f"{where}.{others[0]}: feature {feature.reference!r} is {feature.type}; "
            f"give its value as {key!r}",
            field=f"{where}.{others[0]}",
        )
    if key not in item or item[key] is None:
        raise ValueMissing(
            f"{where}.{key}: required for {feature.type} feature {feature.reference!r}",
            field=f"{where}.{key}",
        )
    value = item[key]
    field = f"{where}.{key}"
    data: dict[str, Any]
    if feature.type == "NUMBER":
        data = {"number": _number(value, field)}
    elif feature.type == "SWITCH":
        if not isinstance(value, bool):
            raise SwitchInvalid(f"{field}: {value!r} is not a boolean", field=field)
        data = {"switch": value}
    elif feature.type == "ENUM":
        allowed = feature.enum_values or ()
        if not isinstance(value, list) or not value:
            raise EnumValueNotAllowed(
                f"{field}: must be a non-empty list of values of {feature.reference!r}",
                field=field,
            )
        chosen: list[str] = []
        for i, v in enumerate(value):
            if not isinstance(v, str) or v not in allowed:
                raise EnumValueNotAllowed(
                    f"{field}[{i}]: {v!r} is not one of the enum_values of "
                    f"{feature.reference!r} ({', '.join(allowed)})",
                    field=f"{field}[{i}]",
                )
            if v in chosen:
                raise EnumValueNotAllowed(f"{field}[{i}]: {v!r} is listed twice", field=field)
            chosen.append(v)
        data = {"enums": chosen}
    else:
        data = {"amount": _amount(value, feature, field)}
    return TypedValue(feature.reference, feature.type, data)


def entitlement_items(body: Mapping[str, Any], field: str = "entitlements") -> list[Any]:
    """The ``entitlements`` list's shape: objects, each naming a feature once."""
    items = body.get(field)
    if items is None:
        return []
    if not isinstance(items, list):
        raise CatalogInvalid(f"{field}: must be a list", field=field)
    if len(items) > PLAN_ENTITLEMENTS_MAX:
        raise CatalogInvalid(
            f"{field}: at most {PLAN_ENTITLEMENTS_MAX} entries, got {len(items)}", field=field
        )
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise CatalogInvalid(f"{where}: must be an object", field=where)
        ref = item.get("feature_reference")
        if not isinstance(ref, str) or not ref:
            raise CatalogInvalid(
                f"{where}.feature_reference: required, a feature reference",
                field=f"{where}.feature_reference",
            )
        if ref in seen:
            raise CatalogInvalid(
                f"{where}.feature_reference: {ref!r} appears twice",
                field=f"{where}.feature_reference",
            )
        seen.add(ref)
    return list(items)


def parse_values(
    items: Sequence[Mapping[str, Any]],
    features: Mapping[str, TypedFeature],
    field: str = "entitlements",
    allowed_keys: frozenset[str] = frozenset(("feature_reference", *VALUE_KEYS.values())),
    positions: Sequence[int] | None = None,
) -> list[TypedValue]:
    """Validate every entry against its feature (``features`` maps reference → feature).
    ``positions``: each entry's index in the request (when ``items`` is a selection)."""
    out: list[TypedValue] = []
    for n, item in enumerate(items):
        i = n if positions is None else positions[n]
        where = f"{field}[{i}]"
        for key in item:
            if key not in allowed_keys:
                raise CatalogInvalid(f"{where}.{key}: unknown field", field=f"{where}.{key}")
        ref = str(item["feature_reference"])
        feature = features.get(ref)
        if feature is None:
            raise UnknownFeature(
                f"{where}.feature_reference: feature {ref!r} not found",
                field=f"{where}.feature_reference",
            )
        out.append(parse_value(item, feature, where))
    return out


def validate_reference(value: Any, field: str = "reference") -> str:
    """A plan or customer reference: ``[a-z0-9_.-]{1,64}``."""
    if not isinstance(value, str) or not REFERENCE_PATTERN.match(value):
        raise CatalogInvalid(f"{field}: {value!r} must match [a-z0-9_.-]{{1,64}}", field=field)
    return value


@dataclass(frozen=True, slots=True)
class PlanHeader:
    """A plan body's own fields, validated (its ``entitlements`` are checked against their
    features separately)."""

    reference: str
    name: str
    description: str | None
    items: tuple[Mapping[str, Any], ...]


def parse_plan_header(body: Any) -> PlanHeader:
    """The checks of `POST /v1/pricing-plans` that need no feature (the API and the config's
    ``catalog.plans`` both use it, so both say the same)."""
    if not isinstance(body, Mapping):
        raise CatalogInvalid("request body must be a JSON object", field="body")
    for key in body:
        if key not in ("reference", "name", "description", "entitlements"):
            raise CatalogInvalid(f"{key}: unknown field", field=str(key))
    reference = validate_reference(body.get("reference"))
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > DESCRIPTION_MAX_LENGTH:
        raise CatalogInvalid(
            f"name: required, a non-empty string of at most {DESCRIPTION_MAX_LENGTH}",
            field="name",
        )
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > DESCRIPTION_MAX_LENGTH
    ):
        raise CatalogInvalid(
            f"description: a string of at most {DESCRIPTION_MAX_LENGTH}", field="description"
        )
    return PlanHeader(reference, name, description, tuple(entitlement_items(body)))
