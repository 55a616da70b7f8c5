"""Plans as code: the config file's ``catalog:`` section (docs/catalog.md). Pure, no IO.

    catalog:
      features:
        - {reference: requests_per_minute, name: Requests Per Minute, type: NUMBER,
           rate_window: MINUTE}
      plans:
        - reference: pro
          name: Pro
          entitlements:
            - {feature_reference: requests_per_minute, number: 600}

Each feature and plan is checked by the same functions as the API, so the messages are the
API's, prefixed with where the item sits (``catalog.plans[0] (pro): entitlements[0].number:
...``). Without a database (``allotment check-config``), a plan may only name features of the
section and a budget only meters of the ``meters:`` section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from allotment.domain.catalog import (
    FeatureSpec,
    TypedFeature,
    TypedValue,
    parse_feature_spec,
    parse_plan_header,
    parse_values,
    typed,
)
from allotment.domain.errors import InvalidInput
from allotment.domain.features import Feature

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PlanSpec:
    where: str
    reference: str
    name: str
    description: str | None
    items: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    features: tuple[tuple[str, FeatureSpec], ...]
    """(where, spec) in file order."""
    plans: tuple[PlanSpec, ...]


class CatalogConfigError(InvalidInput):
    code = "CATALOG_CONFIG_INVALID"


def _fail(where: str, exc: InvalidInput) -> CatalogConfigError:
    return CatalogConfigError(f"{where}: {exc.detail}", field=exc.field)


def _label(raw: Any) -> str:
    ref = raw.get("reference") if isinstance(raw, Mapping) else None
    return f" ({ref})" if isinstance(ref, str) else ""


def parse_catalog(raw: Any) -> CatalogSpec:
    if raw is None:
        return CatalogSpec((), ())
    if not isinstance(raw, Mapping):
        raise CatalogConfigError("catalog: must be a mapping with features and plans")
    for key in raw:
        if key not in ("features", "plans"):
            raise CatalogConfigError(f"catalog.{key}: unknown section (features, plans)")
    features: list[tuple[str, FeatureSpec]] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(raw, "features")):
        where = f"catalog.features[{i}]{_label(item)}"
        try:
            spec = parse_feature_spec(dict(item) if isinstance(item, Mapping) else item)
        except InvalidInput as exc:
            raise _fail(where, exc) from exc
        if spec.reference in seen:
            raise CatalogConfigError(f"{where}: reference {spec.reference!r} declared twice")
        seen.add(spec.reference)
        features.append((where, spec))
    plans: list[PlanSpec] = []
    seen = set()
    for i, item in enumerate(_list(raw, "plans")):
        where = f"catalog.plans[{i}]{_label(item)}"
        plans.append(_plan(item, where))
        if plans[-1].reference in seen:
            raise CatalogConfigError(f"{where}: reference {plans[-1].reference!r} declared twice")
        seen.add(plans[-1].reference)
    return CatalogSpec(tuple(features), tuple(plans))


def _list(raw: Mapping[str, Any], name: str) -> list[Any]:
    value = raw.get(name) or []
    if not isinstance(value, list):
        raise CatalogConfigError(f"catalog.{name}: must be a list")
    return value


def _plan(item: Any, where: str) -> PlanSpec:
    try:
        h = parse_plan_header(item)
    except InvalidInput as exc:
        raise _fail(where, exc) from exc
    return PlanSpec(where, h.reference, h.name, h.description, h.items)


def spec_feature(spec: FeatureSpec) -> TypedFeature:
    """The typed feature a spec declares (for checking values before it is stored)."""
    base = Feature(
        id="", key=spec.reference, name=spec.name, meter_slug=spec.meter_reference,
        group_filters=None, metadata=None, created_at=_EPOCH, updated_at=_EPOCH,
    )  # fmt: skip
    return typed(
        base, spec.type, spec.enum_values, spec.currency, spec.usage_period, spec.rate_window,
        spec.description,
    )  # fmt: skip


def check_meters(spec: CatalogSpec, meter_slugs: set[str]) -> None:
    for where, f in spec.features:
        if f.meter_reference is not None and f.meter_reference not in meter_slugs:
            raise CatalogConfigError(
                f"{where}: meter_reference: meter {f.meter_reference!r} not found",
                field="meter_reference",
            )


def plan_values(plan: PlanSpec, features: Mapping[str, TypedFeature]) -> list[TypedValue]:
    try:
        return parse_values(plan.items, features)
    except InvalidInput as exc:
        raise _fail(plan.where, exc) from exc


def check_catalog(spec: CatalogSpec, meter_slugs: set[str]) -> None:
    """Everything ``check-config`` can check without a database."""
    check_meters(spec, meter_slugs)
    declared = {f.reference: spec_feature(f) for _, f in spec.features}
    for plan in spec.plans:
        plan_values(plan, declared)


def differences(stored: TypedFeature, spec: FeatureSpec) -> Sequence[str]:
    """What a declared feature changes about the stored one (features are never edited)."""
    pairs = (
        ("type", stored.type, spec.type),
        ("enum_values", stored.enum_values, spec.enum_values),
        ("currency", stored.currency, spec.currency),
        ("meter_reference", stored.meter_reference, spec.meter_reference),
        ("usage_period", stored.usage_period, spec.usage_period),
        ("rate_window", stored.rate_window, spec.rate_window),
    )
    return [f"{name} {old!r} -> {new!r}" for name, old, new in pairs if old != new]
