"""The ``meters`` table: SQL in, :class:`~allotment.domain.meters.Meter` out.

Meter writes and event ingest are ordered by a lock so a new meter's backfill sees every
committed event and every later ingest sees the new meter: on PostgreSQL ingest holds a shared
advisory lock and meter writes an exclusive one (per transaction); on SQLite all writers are
already serialised.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from allotment.domain.meters import Aggregation, Meter
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import PipelinedTx, Row, Tx

METERS_LOCK = 724_400
_COLUMNS = (
    "id, slug, name, description, aggregation, event_type, value_property, group_by, "
    "event_from, metadata, managed_by, created_at, updated_at, deleted_at"
)

_cache: dict[Row, Meter] = {}


def lock_for_ingest(tx: Tx, dialect: str) -> None:
    if dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock_shared(?)", (METERS_LOCK,))


def send_lock_for_ingest(tx: PipelinedTx) -> None:
    """:func:`lock_for_ingest` (PostgreSQL) queued on a pipelined transaction, not waited on:
    it travels with the statements after it."""
    tx.send("SELECT pg_advisory_xact_lock_shared(?)", (METERS_LOCK,))


def lock_for_meter_write(tx: Tx, dialect: str) -> None:
    if dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (METERS_LOCK,))


def _to_meter(row: Row) -> Meter:
    """Rows are cached by their full content: parsing a definition compiles its JSONPaths."""
    cached = _cache.get(row)
    if cached is not None:
        return cached
    (
        mid,
        slug,
        name,
        description,
        aggregation,
        event_type,
        value_property,
        group_by,
        event_from,
        metadata,
        managed_by,
        created_at,
        updated_at,
        deleted_at,
    ) = row
    meter = Meter(
        id=str(mid),
        slug=str(slug),
        name=str(name),
        description=description,
        aggregation=Aggregation(aggregation),
        event_type=str(event_type),
        value_property=value_property,
        group_by=json.loads(group_by) if group_by else {},
        event_from=from_micros(int(event_from)) if event_from is not None else None,
        metadata=json.loads(metadata) if metadata else None,
        managed_by=str(managed_by),
        created_at=from_micros(int(created_at)),
        updated_at=from_micros(int(updated_at)),
        deleted_at=from_micros(int(deleted_at)) if deleted_at is not None else None,
    )
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[row] = meter
    return meter


def _params(m: Meter) -> tuple[Any, ...]:
    return (
        m.id,
        m.slug,
        m.name,
        m.description,
        str(m.aggregation),
        m.event_type,
        m.value_property,
        json.dumps(m.group_by, sort_keys=True),
        to_micros(m.event_from) if m.event_from is not None else None,
        json.dumps(m.metadata, sort_keys=True) if m.metadata else None,
        m.managed_by,
        to_micros(m.created_at),
        to_micros(m.updated_at),
        to_micros(m.deleted_at) if m.deleted_at is not None else None,
    )


def insert(tx: Tx, meter: Meter) -> None:
    """Insert a meter; raises DuplicateKey when a live meter has the same slug."""
    tx.execute(
        f"INSERT INTO meters ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _params(meter)
    )


def update(tx: Tx, meter: Meter) -> None:
    """Overwrite every column of the meter with this id."""
    p = _params(meter)
    tx.execute(
        "UPDATE meters SET slug = ?, name = ?, description = ?, aggregation = ?, event_type = ?, "
        "value_property = ?, group_by = ?, event_from = ?, metadata = ?, managed_by = ?, "
        "created_at = ?, updated_at = ?, deleted_at = ? WHERE id = ?",
        (*p[1:], p[0]),
    )


def get_by_id(tx: Tx, meter_id: str) -> Meter | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM meters WHERE id = ?", (meter_id,))
    return _to_meter(row) if row else None


def get_live_by_slug(tx: Tx, slug: str) -> Meter | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM meters WHERE slug = ? AND deleted_at IS NULL", (slug,))
    return _to_meter(row) if row else None


def list_meters(tx: Tx, *, include_deleted: bool, limit: int) -> list[Meter]:
    where = "" if include_deleted else " WHERE deleted_at IS NULL"
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM meters{where} ORDER BY slug, created_at, id LIMIT ?", (limit,)
    )
    return [_to_meter(r) for r in rows]


def live_by_event_types(tx: Tx, event_types: Iterable[str]) -> list[Meter]:
    types = sorted(set(event_types))
    if not types:
        return []
    out: list[Meter] = []
    for start in range(0, len(types), 500):
        chunk = types[start : start + 500]
        rows = tx.execute(
            f"SELECT {_COLUMNS} FROM meters WHERE deleted_at IS NULL AND event_type IN ("
            + ",".join("?" * len(chunk))
            + ")",
            chunk,
        )
        out.extend(_to_meter(r) for r in rows)
    return out


def live_by_managed(tx: Tx, managed_by: str) -> list[Meter]:
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM meters WHERE deleted_at IS NULL AND managed_by = ?", (managed_by,)
    )
    return [_to_meter(r) for r in rows]


def features_using(tx: Tx, slug: str) -> Sequence[tuple[str, str | None]]:
    """``(feature key, meterGroupByFilters JSON)`` of live (unarchived) features on the meter."""
    rows = tx.execute(
        "SELECT key, meter_group_by_filters FROM features WHERE meter_slug = ? "
        "AND archived_at IS NULL ORDER BY key",
        (slug,),
    )
    return [(str(r[0]), r[1]) for r in rows]
