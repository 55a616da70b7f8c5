"""Wire JSON (already decoded, numbers as ``Decimal``) → validated input dataclasses for
features, entitlements, grants, resets and list paging. Pure: no IO and no clock; defaults
that depend on "now" are resolved by the services.

Every rejection is an ``InvalidInput`` whose detail names the wire field and the rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from allotment.domain import limits
from allotment.domain.decimals import parse_amount
from allotment.domain.errors import InvalidInput
from allotment.domain.features import (
    merge_filters,
    parse_advanced_filters,
    validate_key,
    validate_name,
    validate_string_map,
)
from allotment.domain.grants import (
    validate_amount,
    validate_expiration_count,
    validate_priority,
    validate_rollover,
)
from allotment.domain.ids import is_ulid
from allotment.domain.periods import (
    Duration,
    ExpirationUnit,
    parse_interval,
    validate_usage_period_interval,
)
from allotment.domain.timeutil import parse_rfc3339


class EntitlementType(StrEnum):
    METERED = "metered"
    STATIC = "static"
    BOOLEAN = "boolean"


# --------------------------------------------------------------------------------------------
# Small field readers
# --------------------------------------------------------------------------------------------


def _obj(payload: Any, what: str = "request body") -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput(f"{what} must be a JSON object", field="body")
    return payload


def _opt_bool(body: Mapping[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidInput(f"{field}: must be a boolean", field=field)
    return value


def _opt_int(body: Mapping[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{field}: must be an integer", field=field)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if not isinstance(value, int):
        raise InvalidInput(f"{field}: must be an integer", field=field)
    return value


def _opt_number(body: Mapping[str, Any], field: str) -> Decimal | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str):  # JSON strings are not numbers on this API
        raise InvalidInput(f"{field}: must be a number", field=field)
    return parse_amount(value, field)


def _opt_time(body: Mapping[str, Any], field: str) -> datetime | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be an RFC 3339 date-time string", field=field)
    return parse_rfc3339(value, field)


def _opt_str(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be a string", field=field)
    return value


def _interval(value: Any, field: str) -> Duration:
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            f"{field}: required, DAY|WEEK|MONTH|YEAR or an ISO-8601 duration", field=field
        )
    return parse_interval(value, field=field)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureCreate:
    key: str
    name: str
    meter_slug: str | None
    group_filters: dict[str, str] | None
    metadata: dict[str, str] | None


def parse_feature_create(payload: Any) -> FeatureCreate:
    body = _obj(payload)
    key = validate_key(body.get("key"))
    name = validate_name(body.get("name"))
    meter_slug = _opt_str(body, "meterSlug") or None
    simple = validate_string_map(body.get("meterGroupByFilters"), "meterGroupByFilters")
    advanced = parse_advanced_filters(body.get("advancedMeterGroupByFilters"))
    filters = merge_filters(simple, advanced)
    if filters and meter_slug is None:
        raise InvalidInput(
            "meterGroupByFilters: group-by filters need a meterSlug", field="meterGroupByFilters"
        )
    metadata = validate_string_map(body.get("metadata"), "metadata")
    return FeatureCreate(key, name, meter_slug, filters, metadata)


# --------------------------------------------------------------------------------------------
# Entitlements
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsagePeriodIn:
    interval: Duration
    anchor: datetime | None


@dataclass(frozen=True, slots=True)
class EntitlementCreate:
    type: EntitlementType
    feature_key: str | None
    feature_id: str | None
    metadata: dict[str, str] | None
    usage_period: UsagePeriodIn | None
    measure_usage_from: datetime | str | None
    """A date-time, ``"NOW"``, ``"CURRENT_PERIOD_START"`` or None (= now)."""
    is_soft_limit: bool
    issue_after_reset: Decimal | None
    issue_after_reset_priority: int | None
    preserve_overage_at_reset: bool
    config: str | None


_METERED_ONLY = (
    "measureUsageFrom",
    "issueAfterReset",
    "issueAfterResetPriority",
    "isSoftLimit",
    "preserveOverageAtReset",
)


def _usage_period(value: Any, *, metered: bool) -> UsagePeriodIn:
    body = _obj(value, "usagePeriod")
    interval = _interval(body.get("interval"), "usagePeriod.interval")
    if metered:
        validate_usage_period_interval(interval)
    anchor = _opt_time(body, "anchor")
    return UsagePeriodIn(interval, anchor)


def _measure_usage_from(value: Any) -> datetime | str | None:
    field = "measureUsageFrom"
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"{field}: must be CURRENT_PERIOD_START, NOW or an RFC 3339 date-time", field=field
        )
    if value in ("CURRENT_PERIOD_START", "NOW"):
        return value
    return parse_rfc3339(value, field)


def _config(value: Any) -> str:
    field = "config"
    if value is None:
        raise InvalidInput("config: required for static entitlements", field=field)
    if not isinstance(value, str):
        raise InvalidInput(
            'config: must be a string holding JSON, e.g. "{\\"a\\":1}"',
            field=field,
        )
    try:
        json.loads(value)
    except ValueError as exc:
        raise InvalidInput(f"config: not valid JSON ({exc})", field=field) from exc
    return value


def parse_entitlement_create(payload: Any) -> EntitlementCreate:
    body = _obj(payload)
    raw_type = body.get("type")
    try:
        kind = EntitlementType(str(raw_type))
    except ValueError as exc:
        raise InvalidInput(
            f"type: {raw_type!r} is not one of metered, static, boolean", field="type"
        ) from exc
    feature_key = _opt_str(body, "featureKey") or None
    feature_id = _opt_str(body, "featureId") or None
    if feature_key is None and feature_id is None:
        raise InvalidInput("featureKey or featureId is required", field="featureKey")
    if feature_id is not None and not is_ulid(feature_id):
        raise InvalidInput(f"featureId: {feature_id!r} is not a ULID", field="featureId")
    metadata = validate_string_map(body.get("metadata"), "metadata")
    metered = kind is EntitlementType.METERED
    raw_period = body.get("usagePeriod")
    period = None if raw_period is None else _usage_period(raw_period, metered=metered)
    if body.get("grants") is not None and not metered:
        raise InvalidInput("grants: only supported for metered entitlements", field="grants")
    if metered:
        if period is None:
            raise InvalidInput("usagePeriod: required for metered entitlements",
                               field="usagePeriod")  # fmt: skip
        if body.get("config") is not None:
            raise InvalidInput("config: not allowed for metered entitlements", field="config")
        issue = _opt_number(body, "issueAfterReset")
        priority = _opt_int(body, "issueAfterResetPriority")
        if issue is not None and issue < 0:
            raise InvalidInput("issueAfterReset: must be >= 0", field="issueAfterReset")
        if priority is not None and issue is None:
            raise InvalidInput(
                "issueAfterResetPriority: requires issueAfterReset",
                field="issueAfterResetPriority",
            )
        if priority is not None and not 1 <= priority <= 255:
            raise InvalidInput(
                "issueAfterResetPriority: must be between 1 and 255",
                field="issueAfterResetPriority",
            )
        _opt_bool(body, "isUnlimited")  # deprecated: accepted and ignored
        return EntitlementCreate(
            kind, feature_key, feature_id, metadata, period,
            _measure_usage_from(body.get("measureUsageFrom")),
            bool(_opt_bool(body, "isSoftLimit")), issue, priority,
            bool(_opt_bool(body, "preserveOverageAtReset")), None,
        )  # fmt: skip
    for name in _METERED_ONLY:
        if body.get(name) is not None:
            raise InvalidInput(
                f"{name}: invalid input for a {kind.value} entitlement (metered only)",
                field=name,
            )
    config = _config(body.get("config")) if kind is EntitlementType.STATIC else None
    if kind is EntitlementType.BOOLEAN and body.get("config") is not None:
        raise InvalidInput("config: not allowed for boolean entitlements", field="config")
    return EntitlementCreate(
        kind, feature_key, feature_id, metadata, period, None, False, None, None, False, config
    )


# --------------------------------------------------------------------------------------------
# Grants
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecurrenceIn:
    interval: Duration
    anchor: datetime | None


@dataclass(frozen=True, slots=True)
class GrantCreate:
    amount: Decimal
    priority: int
    effective_at: datetime
    expiration_unit: ExpirationUnit | None
    """None (v2 only): the grant never expires."""
    expiration_count: int | None
    min_rollover: Decimal
    max_rollover: Decimal
    recurrence: RecurrenceIn | None
    metadata: dict[str, str] | None


def parse_grant_create(payload: Any) -> GrantCreate:
    body = _obj(payload)
    if body.get("amount") is None:
        raise InvalidInput("amount: required", field="amount")
    amount = validate_amount(_opt_number(body, "amount") or Decimal(0))
    priority = validate_priority(_opt_int(body, "priority"))
    effective_at = _opt_time(body, "effectiveAt")
    if effective_at is None:
        raise InvalidInput("effectiveAt: required", field="effectiveAt")
    raw_exp = body.get("expiration")
    if raw_exp is None:
        raise InvalidInput("expiration: required ({duration, count})", field="expiration")
    exp = _obj(raw_exp, "expiration")
    try:
        unit = ExpirationUnit(str(exp.get("duration")))
    except ValueError as exc:
        raise InvalidInput(
            f"expiration.duration: {exp.get('duration')!r} is not one of "
            "HOUR, DAY, WEEK, MONTH, YEAR",
            field="expiration.duration",
        ) from exc
    count = _opt_int(exp, "count")
    if count is None:
        raise InvalidInput("expiration.count: required", field="expiration.count")
    validate_expiration_count(count)
    low, high = validate_rollover(
        _opt_number(body, "minRolloverAmount"), _opt_number(body, "maxRolloverAmount")
    )
    recurrence = None
    if body.get("recurrence") is not None:
        rec = _obj(body["recurrence"], "recurrence")
        recurrence = RecurrenceIn(
            _interval(rec.get("interval"), "recurrence.interval"), _opt_time(rec, "anchor")
        )
    metadata = validate_string_map(body.get("metadata"), "metadata")
    return GrantCreate(amount, priority, effective_at, unit, count, low, high, recurrence, metadata)


# --------------------------------------------------------------------------------------------
# Reset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResetIn:
    effective_at: datetime | None
    retain_anchor: bool
    preserve_overage: bool | None


def parse_reset(payload: Any) -> ResetIn:
    body = _obj(payload)
    return ResetIn(
        _opt_time(body, "effectiveAt"),
        bool(_opt_bool(body, "retainAnchor")),
        _opt_bool(body, "preserveOverage"),
    )


# --------------------------------------------------------------------------------------------
# Paging (api-contract §1.7)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paging:
    """``envelope`` when ``page`` or ``pageSize`` was sent; else a bare array with the legacy
    ``limit``/``offset``. ``limit``/``offset`` are the effective row window either way."""

    envelope: bool
    page: int
    page_size: int
    limit: int
    offset: int
    descending: bool
    order_by: str


def make_paging(
    page: int | None,
    page_size: int | None,
    limit: int | None,
    offset: int | None,
    order: str | None,
    order_by: str | None,
    order_fields: tuple[str, ...],
    default_order_by: str,
) -> Paging:
    if page is not None and page < 1:
        raise InvalidInput(f"page: must be >= 1, got {page}", field="page")
    if page_size is not None and not 1 <= page_size <= limits.PAGE_SIZE_MAX:
        raise InvalidInput(
            f"pageSize: must be between 1 and {limits.PAGE_SIZE_MAX}, got {page_size}",
            field="pageSize",
        )
    if limit is not None and not 1 <= limit <= limits.PAGE_SIZE_MAX:
        raise InvalidInput(
            f"limit: must be between 1 and {limits.PAGE_SIZE_MAX}, got {limit}", field="limit"
        )
    if offset is not None and offset < 0:
        raise InvalidInput(f"offset: must be >= 0, got {offset}", field="offset")
    direction = (order or "ASC").upper()
    if direction not in ("ASC", "DESC"):
        raise InvalidInput(f"order: {order!r} is not one of ASC, DESC", field="order")
    field = order_by or default_order_by
    if field not in order_fields:
        raise InvalidInput(
            f"orderBy: {order_by!r} is not one of {', '.join(order_fields)}", field="orderBy"
        )
    descending = direction == "DESC"
    if page is None and page_size is None:
        row_limit = limit if limit is not None else limits.LEGACY_LIST_LIMIT_DEFAULT
        return Paging(False, 1, row_limit, row_limit, offset or 0, descending, field)
    p = page or 1
    size = page_size or limits.PAGE_SIZE_DEFAULT
    return Paging(True, p, size, size, (p - 1) * size, descending, field)
