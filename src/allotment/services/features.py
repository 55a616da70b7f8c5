"""Features: create (validated against the meter), get by id or key, list, archive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from allotment.domain.entitlement_inputs import FeatureCreate, Paging
from allotment.domain.errors import Conflict, NotFound
from allotment.domain.features import Feature, validate_meter_for_feature
from allotment.domain.ids import new_ulid
from allotment.domain.timeutil import to_micros
from allotment.storage import features_repo, usage_marks
from allotment.storage.database import DuplicateKey

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.services.meters import MeterService
    from allotment.storage.database import Database


class FeatureService:
    """Collaborators: the database and clock, and ``meters`` (a feature's meter must exist
    and suit it)."""

    def __init__(self, db: Database, clock: Clock, meters: MeterService) -> None:
        self._db = db
        self._clock = clock
        self._meters = meters

    def _check_meter(self, inp: FeatureCreate) -> None:
        if inp.meter_slug is None:
            return
        try:
            meter = self._meters.get(inp.meter_slug)
        except NotFound as exc:
            raise NotFound(
                f"meterSlug: meter {inp.meter_slug!r} not found", field="meterSlug"
            ) from exc
        aggregation = str(getattr(meter.aggregation, "value", meter.aggregation))
        validate_meter_for_feature(
            inp.meter_slug, aggregation, set(meter.group_by or {}), inp.group_filters
        )

    def create(self, inp: FeatureCreate) -> Feature:
        self._check_meter(inp)
        now = self._clock.now()
        feature = Feature(
            id=new_ulid(int(now.timestamp() * 1000)),
            key=inp.key,
            name=inp.name,
            meter_slug=inp.meter_slug,
            group_filters=inp.group_filters,
            metadata=inp.metadata,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._db.write() as tx:
                existing = features_repo.live_by_key(tx, inp.key)
                if existing is not None:
                    raise self._conflict(existing)
                features_repo.insert(tx, feature)
                usage_marks.bump_catalog(tx)
        except DuplicateKey:
            with self._db.read() as tx:
                existing = features_repo.live_by_key(tx, inp.key)
            if existing is None:
                raise
            raise self._conflict(existing) from None
        return feature

    @staticmethod
    def _conflict(existing: Feature) -> Conflict:
        return Conflict(
            f"feature with key {existing.key!r} already exists",
            field="key",
            extensions={"conflictingEntityId": existing.id},
        )

    def get(self, id_or_key: str) -> Feature:
        """A non-archived feature by id or key (archived ones are not found)."""
        with self._db.read() as tx:
            found = features_repo.live_by_id_or_key(tx, id_or_key)
        if found is None:
            raise NotFound(f"feature {id_or_key!r} not found")
        return found

    def archive(self, id_or_key: str) -> None:
        now_us = to_micros(self._clock.now())
        with self._db.write() as tx:
            found = features_repo.live_by_id_or_key(tx, id_or_key)
            if found is None or not features_repo.archive(tx, found.id, now_us):
                raise NotFound(f"feature {id_or_key!r} not found")
            usage_marks.bump_catalog(tx)

    def list(
        self, meter_slugs: Sequence[str], include_archived: bool, paging: Paging
    ) -> tuple[list[Feature], int]:
        with self._db.read() as tx:
            return features_repo.list_features(
                tx, meter_slugs, include_archived, paging.order_by, paging.descending,
                paging.limit, paging.offset,
            )  # fmt: skip
