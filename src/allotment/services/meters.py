"""Meters: config sync, CRUD through the API, and rollup backfill/rebuild.

Public methods other services use: :meth:`MeterService.get` (id or slug, live meters only,
raises NotFound), :meth:`MeterService.list`, :meth:`MeterService.by_event_type`. Every read
goes to the database (rows are parsed once and cached by content in ``meters_repo``), so
several server processes on one PostgreSQL always agree.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from allotment.domain import limits
from allotment.domain.errors import Conflict, InvalidInput, NotFound
from allotment.domain.ids import is_ulid, new_ulid
from allotment.domain.meters import (
    SLUG_PATTERN,
    Meter,
    MeterDefinition,
    parse_event_from,
    parse_group_by,
    parse_meter_definition,
)
from allotment.domain.timeutil import to_micros
from allotment.storage import meters_repo, usage_marks, usage_tail, usage_write
from allotment.storage.database import DuplicateKey, Tx

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.storage.database import Database

log = logging.getLogger("allotment.meters")

METADATA_MAX_KEYS = 256
_IMMUTABLE = (
    ("slug", "slug"),
    ("aggregation", "aggregation"),
    ("eventType", "event_type"),
    ("valueProperty", "value_property"),
)


Meters = list[Meter]


def check_id_or_slug(value: str) -> str:
    """The ``meterIdOrSlug`` path parameter: a ULID or a slug (400 otherwise)."""
    if not value or (not is_ulid(value) and SLUG_PATTERN.match(value) is None) or len(value) > 64:
        raise InvalidInput(
            f"meterIdOrSlug: {value!r} is neither a meter id (ULID) nor a slug",
            field="meterIdOrSlug",
        )
    return value


def parse_metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput("metadata: must be an object of string values", field="metadata")
    if len(value) > METADATA_MAX_KEYS:
        raise InvalidInput(f"metadata: at most {METADATA_MAX_KEYS} keys", field="metadata")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidInput(f"metadata.{key}: must be a string", field=f"metadata.{key}")
    return dict(value) or None


def _definition_key(m: MeterDefinition) -> tuple[Any, ...]:
    """What the rollups depend on: a change here means a rebuild."""
    return (m.aggregation, m.event_type, m.value_property, sorted(m.group_by.items()), m.event_from)


class MeterService:
    """Collaborators: the database and clock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ------------------------------------------------------------ reads

    def get(self, id_or_slug: str) -> Meter:
        """A live meter by id or slug; NotFound otherwise."""
        with self._db.read() as tx:
            meter = self._find(tx, id_or_slug)
        if meter is None:
            raise NotFound(f"meter not found: {id_or_slug}")
        return meter

    def list(self, include_deleted: bool = False) -> Meters:
        """Meters ordered by slug (at most ``limits.METERS_LIST_MAX``)."""
        with self._db.read() as tx:
            return meters_repo.list_meters(
                tx, include_deleted=include_deleted, limit=limits.METERS_LIST_MAX
            )

    def by_event_type(self, event_type: str) -> Meters:
        """Live meters fed by events of this CloudEvent ``type``."""
        with self._db.read() as tx:
            return meters_repo.live_by_event_types(tx, [event_type])

    @staticmethod
    def _find(tx: Tx, id_or_slug: str) -> Meter | None:
        if is_ulid(id_or_slug):
            meter = meters_repo.get_by_id(tx, id_or_slug.upper())
            if meter is not None and meter.deleted_at is None:
                return meter
        if SLUG_PATTERN.match(id_or_slug):
            return meters_repo.get_live_by_slug(tx, id_or_slug)
        return None

    # ------------------------------------------------------------ writes

    def create(self, body: Mapping[str, Any]) -> Meter:
        """Create a meter (API-managed) and backfill it from the stored events, atomically."""
        definition = parse_meter_definition(body)
        metadata = parse_metadata(body.get("metadata"))
        now = self._clock.now()
        meter = Meter(
            **_fields(definition),
            id=new_ulid(to_micros(now) // 1000),
            metadata=metadata,
            managed_by="api",
            created_at=now,
            updated_at=now,
        )
        db = self._db
        with db.write() as tx:
            meters_repo.lock_for_meter_write(tx, db.dialect)
            usage_tail.fold_all(tx)  # a backfill must not count the tail twice
            if meters_repo.get_live_by_slug(tx, meter.slug) is not None:
                raise Conflict(f"meter with slug {meter.slug!r} already exists", field="slug")
            try:
                meters_repo.insert(tx, meter)
            except DuplicateKey as exc:
                raise Conflict(
                    f"meter with slug {meter.slug!r} already exists", field="slug"
                ) from exc
            usage_write.backfill(tx, meter.id, meter)
            usage_marks.bump_catalog(tx)  # value caches reload (docs/api/entitlements.md)
        return meter

    def update(self, id_or_slug: str, body: Mapping[str, Any]) -> Meter:
        """PUT: replace name, description, metadata and groupBy (absent ones are cleared; name
        falls back to the slug). Immutable fields may be repeated unchanged, not changed.
        A groupBy change rebuilds the meter's rollups."""
        check_id_or_slug(id_or_slug)
        db = self._db
        with db.write() as tx:
            meters_repo.lock_for_meter_write(tx, db.dialect)
            usage_tail.fold_all(tx)  # a backfill must not count the tail twice
            current = self._find(tx, id_or_slug)
            if current is None:
                raise NotFound(f"meter not found: {id_or_slug}")
            if current.is_config:
                raise Conflict(
                    f"meter {current.slug!r} is managed by the configuration file; "
                    "change it there and restart",
                    field="meterIdOrSlug",
                )
            updated = self._apply_update(current, body)
            self._check_features(tx, current, updated)
            meters_repo.update(tx, updated)
            usage_marks.bump_catalog(tx)
            if _definition_key(updated) != _definition_key(current):
                usage_write.backfill(tx, updated.id, updated)
        return updated

    def _apply_update(self, current: Meter, body: Mapping[str, Any]) -> Meter:
        for wire, attr in _IMMUTABLE:
            if wire in body and body[wire] is not None:
                sent, have = body[wire], getattr(current, attr)
                if sent != (str(have) if have is not None else None):
                    raise InvalidInput(f"{wire}: cannot be changed (is {have!r})", field=wire)
        if body.get("eventFrom") is not None:
            sent_from = parse_event_from(body["eventFrom"])
            if sent_from != current.event_from:
                raise InvalidInput("eventFrom: cannot be changed", field="eventFrom")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 256):
            raise InvalidInput("name: must be a string of at most 256 characters", field="name")
        description = body.get("description")
        if description is not None and (
            not isinstance(description, str) or len(description) > 1024
        ):
            raise InvalidInput(
                "description: must be a string of at most 1024 characters", field="description"
            )
        group_by = parse_group_by(body.get("groupBy"), current.value_property)
        metadata = parse_metadata(body.get("metadata"))
        return replace(
            current,
            name=name or current.slug,
            description=description,
            group_by=group_by,
            metadata=metadata,
            updated_at=self._clock.now(),
        )

    @staticmethod
    def _check_features(tx: Tx, current: Meter, updated: Meter) -> None:
        dropped = set(current.group_by) - set(updated.group_by)
        if not dropped:
            return
        for key, filters in meters_repo.features_using(tx, current.slug):
            used = set(_filter_keys(filters)) & dropped
            if used:
                raise Conflict(
                    f"groupBy: key(s) {', '.join(sorted(used))} are used by feature {key!r}",
                    field="groupBy",
                )

    def delete(self, id_or_slug: str) -> None:
        """Soft-delete an API-managed meter and drop its rollups."""
        check_id_or_slug(id_or_slug)
        db = self._db
        with db.write() as tx:
            meters_repo.lock_for_meter_write(tx, db.dialect)
            usage_tail.fold_all(tx)  # a backfill must not count the tail twice
            current = self._find(tx, id_or_slug)
            if current is None:
                raise NotFound(f"meter not found: {id_or_slug}")
            if current.is_config:
                raise Conflict(
                    f"meter {current.slug!r} is managed by the configuration file; "
                    "remove it there and restart",
                    field="meterIdOrSlug",
                )
            features = meters_repo.features_using(tx, current.slug)
            if features:
                raise Conflict(
                    f"meter {current.slug!r} is used by feature {features[0][0]!r}; "
                    "archive the feature first",
                    field="meterIdOrSlug",
                )
            now = self._clock.now()
            meters_repo.update(tx, replace(current, deleted_at=now, updated_at=now))
            usage_write.delete_rollups(tx, current.id)
            usage_marks.bump_catalog(tx)

    # ------------------------------------------------------------ config

    def sync_config(self, raw_meters: Sequence[Mapping[str, Any]]) -> None:
        """Upsert the config file's meters (``managed_by='config'``); called at start-up.

        New meters get a ULID and are backfilled; a changed definition is rebuilt. An API meter
        with the same slug is taken over by the config. Config meters no longer in the file
        are released to API management (kept, so their usage survives a config mistake).
        """
        definitions = [parse_meter_definition(raw) for raw in raw_meters]
        metadata = [parse_metadata(raw.get("metadata")) for raw in raw_meters]
        now = self._clock.now()
        db = self._db
        with db.write() as tx:
            meters_repo.lock_for_meter_write(tx, db.dialect)
            usage_tail.fold_all(tx)  # a backfill must not count the tail twice
            usage_marks.bump_catalog(tx)
            wanted = {d.slug for d in definitions}
            for d, meta in zip(definitions, metadata, strict=True):
                current = meters_repo.get_live_by_slug(tx, d.slug)
                if current is None:
                    meter = Meter(
                        **_fields(d),
                        id=new_ulid(to_micros(now) // 1000),
                        metadata=meta,
                        managed_by="config",
                        created_at=now,
                        updated_at=now,
                    )
                    meters_repo.insert(tx, meter)
                    usage_write.backfill(tx, meter.id, meter)
                    log.info("config meter %s created", d.slug)
                    continue
                updated = replace(current, **_fields(d), metadata=meta, managed_by="config")
                if updated == current:
                    continue
                meters_repo.update(tx, replace(updated, updated_at=now))
                if _definition_key(updated) != _definition_key(current):
                    usage_write.backfill(tx, updated.id, updated)
                    log.info("config meter %s changed; rollups rebuilt", d.slug)
            for old in meters_repo.live_by_managed(tx, "config"):
                if old.slug not in wanted:
                    meters_repo.update(tx, replace(old, managed_by="api", updated_at=now))
                    log.warning(
                        "meter %s is no longer in the config; now managed by the API", old.slug
                    )


def _fields(d: MeterDefinition) -> dict[str, Any]:
    return {
        "slug": d.slug,
        "aggregation": d.aggregation,
        "event_type": d.event_type,
        "name": d.name,
        "description": d.description,
        "value_property": d.value_property,
        "group_by": dict(d.group_by),
        "event_from": d.event_from,
    }


def _filter_keys(filters: str | None) -> list[str]:
    if not filters:
        return []
    try:
        decoded = json.loads(filters)
    except ValueError:
        return []
    return [str(k) for k in decoded] if isinstance(decoded, dict) else []
