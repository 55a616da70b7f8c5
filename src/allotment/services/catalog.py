"""The `/v1` catalog: typed features and versioned pricing plans (catalog.md §2–§3).

Features are rows of the one features table (``features_repo`` writes the shared columns,
``catalog_repo`` the typed ones), so a `/v1` feature is an `/api/v1` feature. Plan versions
are written once and never edited: a new set of values is a new version, active from now.

Every input is validated (against the features it names) before the write transaction opens,
so bad input changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from allotment.clock import Clock
from allotment.domain.catalog import (
    FeatureExists,
    FeatureNotFound,
    FeatureSpec,
    MeterNotFound,
    TypedFeature,
    TypedValue,
    entitlement_items,
    parse_plan_header,
    parse_values,
)
from allotment.domain.catalog_config import (
    CatalogConfigError,
    differences,
    parse_catalog,
    plan_values,
)
from allotment.domain.catalog_plans import (
    Plan,
    PlanExists,
    PlanNotFound,
    PlanVersion,
    PlanVersionNotFound,
    same_values,
)
from allotment.domain.errors import InvalidInput, NotFound
from allotment.domain.features import Feature, validate_meter_for_feature
from allotment.domain.ids import new_ulid
from allotment.domain.timeutil import to_micros
from allotment.storage import catalog_repo, features_repo, usage_marks
from allotment.storage.database import Database, DuplicateKey, Tx


class MeterLookup(Protocol):
    def get(self, id_or_slug: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class PlanView:
    plan: Plan
    version: PlanVersion
    versions: tuple[tuple[int, int], ...]
    """(number, created_at µs) of every version, oldest first."""


class CatalogService:
    def __init__(self, db: Database, clock: Clock, meters: MeterLookup) -> None:
        self._db = db
        self._clock = clock
        self._meters = meters

    def _new_id(self) -> str:
        return new_ulid(int(self._clock.now().timestamp() * 1000))

    # ------------------------------------------------------------ features

    def _check_meter(self, spec: FeatureSpec) -> None:
        if spec.meter_reference is None:
            return
        try:
            meter = self._meters.get(spec.meter_reference)
        except NotFound as exc:
            raise MeterNotFound(
                f"meter_reference: meter {spec.meter_reference!r} not found",
                field="meter_reference",
            ) from exc
        aggregation = str(getattr(meter.aggregation, "value", meter.aggregation))
        try:
            validate_meter_for_feature(spec.meter_reference, aggregation, set(), None)
        except InvalidInput as exc:
            raise MeterNotFound(
                exc.detail.replace("meterSlug", "meter_reference"), field="meter_reference"
            ) from exc

    def create_feature(self, spec: FeatureSpec) -> TypedFeature:
        self._check_meter(spec)
        now = self._clock.now()
        base = Feature(
            id=self._new_id(), key=spec.reference, name=spec.name,
            meter_slug=spec.meter_reference, group_filters=None, metadata=None,
            created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            with self._db.write() as tx:
                if catalog_repo.live_feature(tx, spec.reference) is not None:
                    raise self._feature_exists(spec.reference)
                features_repo.insert(tx, base)
                catalog_repo.set_type(tx, base.id, spec)
                usage_marks.bump_catalog(tx)
                catalog_repo.bump(tx)
                created = catalog_repo.live_feature(tx, spec.reference)
        except DuplicateKey:
            raise self._feature_exists(spec.reference) from None
        assert created is not None
        return created

    @staticmethod
    def _feature_exists(reference: str) -> FeatureExists:
        return FeatureExists(f"reference: feature {reference!r} already exists", field="reference")

    def feature(self, reference: str) -> TypedFeature:
        with self._db.read() as tx:
            found = catalog_repo.live_feature(tx, reference)
        if found is None:
            raise FeatureNotFound(f"feature {reference!r} not found", field="reference")
        return found

    def features(self, cursor: str | None, limit: int) -> list[TypedFeature]:
        with self._db.read() as tx:
            return catalog_repo.list_features(tx, cursor, limit)

    def archive_feature(self, reference: str) -> None:
        at_us = to_micros(self._clock.now())
        with self._db.write() as tx:
            found = catalog_repo.live_feature(tx, reference)
            if found is None or not features_repo.archive(tx, found.feature.id, at_us):
                raise FeatureNotFound(f"feature {reference!r} not found", field="reference")
            usage_marks.bump_catalog(tx)
            catalog_repo.bump(tx)

    # ------------------------------------------------------------ typed values

    def parse_values(
        self,
        items: Sequence[Mapping[str, Any]],
        field: str = "entitlements",
        allowed_keys: frozenset[str] | None = None,
        positions: Sequence[int] | None = None,
    ) -> list[TypedValue]:
        """Validate typed values against the live features they name (one read)."""
        refs = [str(i["feature_reference"]) for i in items]
        with self._db.read() as tx:
            features = catalog_repo.live_features(tx, refs)
        if allowed_keys is None:
            return parse_values(items, features, field, positions=positions)
        return parse_values(items, features, field, allowed_keys, positions)

    # ------------------------------------------------------------ plans

    def create_plan(self, body: Any) -> PlanView:
        h = parse_plan_header(body)
        values = self.parse_values(h.items)
        return self._insert_plan(h.reference, h.name, h.description, values)

    def _insert_plan(
        self, reference: str, name: str, description: str | None, values: Sequence[TypedValue]
    ) -> PlanView:
        now = self._clock.now()
        plan = Plan(self._new_id(), reference, name, description, 1, now, now)
        try:
            with self._db.write() as tx:
                if catalog_repo.plan_by_reference(tx, reference) is not None:
                    raise self._plan_exists(reference)
                catalog_repo.insert_plan(tx, plan)
                catalog_repo.insert_version(tx, PlanVersion(plan.id, 1, tuple(values), now))
                catalog_repo.bump(tx)
        except DuplicateKey:
            raise self._plan_exists(reference) from None
        return self.plan(reference)

    @staticmethod
    def _plan_exists(reference: str) -> PlanExists:
        return PlanExists(f"reference: pricing plan {reference!r} already exists",
                          field="reference")  # fmt: skip

    @staticmethod
    def _find_plan(tx: Tx, reference: str) -> Plan:
        plan = catalog_repo.plan_by_reference(tx, reference)
        if plan is None:
            raise PlanNotFound(f"pricing plan {reference!r} not found", field="reference")
        return plan

    def add_version(self, reference: str, body: Any) -> PlanView:
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object", field="body")
        for key in body:
            if key != "entitlements":
                raise InvalidInput(f"{key}: unknown field", field=str(key))
        with self._db.read() as tx:
            self._find_plan(tx, reference)
        values = self.parse_values(entitlement_items(body))
        self._write_version(reference, values)
        return self.plan(reference)

    def _write_version(self, reference: str, values: Sequence[TypedValue]) -> int:
        now = self._clock.now()
        with self._db.write() as tx:
            plan = self._find_plan(tx, reference)
            number = plan.active_version + 1
            catalog_repo.insert_version(tx, PlanVersion(plan.id, number, tuple(values), now))
            catalog_repo.set_active_version(tx, plan.id, number, to_micros(now))
            catalog_repo.bump(tx)
        return number

    def plan(self, reference: str, version_no: int | None = None) -> PlanView:
        with self._db.read() as tx:
            plan = self._find_plan(tx, reference)
            number = plan.active_version if version_no is None else version_no
            version = catalog_repo.plan_version(tx, plan.id, number)
            if version is None:
                raise PlanVersionNotFound(
                    f"pricing plan {reference!r} has no version {number}", field="version"
                )
            versions = catalog_repo.version_numbers(tx, plan.id)
        return PlanView(plan, version, tuple(versions))

    def plans(self, cursor: str | None, limit: int, include_archived: bool) -> list[PlanView]:
        with self._db.read() as tx:
            plans = catalog_repo.list_plans(tx, cursor, limit, include_archived)
            out = []
            for plan in plans:
                version = catalog_repo.plan_version(tx, plan.id, plan.active_version)
                assert version is not None
                versions = catalog_repo.version_numbers(tx, plan.id)
                out.append(PlanView(plan, version, tuple(versions)))
        return out

    def archive_plan(self, reference: str) -> None:
        at_us = to_micros(self._clock.now())
        with self._db.write() as tx:
            plan = self._find_plan(tx, reference)
            if not catalog_repo.archive_plan(tx, plan.id, at_us):
                raise PlanNotFound(f"pricing plan {reference!r} not found", field="reference")
            catalog_repo.bump(tx)

    # ------------------------------------------------------------ plans as code

    def apply_config(self, raw: Any) -> dict[str, str]:
        """Apply the config's ``catalog:`` section at start-up, idempotently: missing features
        are created (a declared feature that differs from the stored one is refused: features
        are never edited); a plan is created, or gets a new version when its values changed.
        Returns what happened to each item (for the log)."""
        spec = parse_catalog(raw)
        outcome: dict[str, str] = {}
        for where, f in spec.features:
            with self._db.read() as tx:
                stored = catalog_repo.live_feature(tx, f.reference)
            if stored is None:
                try:
                    self.create_feature(f)
                except InvalidInput as exc:
                    raise CatalogConfigError(f"{where}: {exc.detail}", field=exc.field) from exc
                outcome[f"feature {f.reference}"] = "created"
                continue
            changed = differences(stored, f)
            if changed:
                raise CatalogConfigError(
                    f"{where}: feature {f.reference!r} exists with another definition "
                    f"({'; '.join(changed)}); features are not edited: archive it first or "
                    "use a new reference"
                )
            outcome[f"feature {f.reference}"] = "unchanged"
        for plan in spec.plans:
            refs = [str(i["feature_reference"]) for i in plan.items]
            with self._db.read() as tx:
                features = catalog_repo.live_features(tx, refs)
            values = plan_values(plan, features)
            outcome[f"plan {plan.reference}"] = self.apply_plan(
                plan.reference, plan.name, plan.description, values
            )
        return outcome

    def apply_plan(
        self, reference: str, name: str, description: str | None, values: Sequence[TypedValue]
    ) -> str:
        """Create the plan, or add a version when its values changed; never edit one.
        Returns ``created``, ``versioned`` or ``unchanged``."""
        with self._db.read() as tx:
            plan = catalog_repo.plan_by_reference(tx, reference)
            active = (
                None if plan is None
                else catalog_repo.plan_version(tx, plan.id, plan.active_version)
            )  # fmt: skip
        if plan is None:
            self._insert_plan(reference, name, description, values)
            return "created"
        assert active is not None
        if same_values(active.values, values):
            return "unchanged"
        self._write_version(reference, values)
        return "versioned"
