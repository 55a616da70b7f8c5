"""Features table: SQL in, ``Feature`` out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from allotment.domain.features import Feature
from allotment.domain.ids import is_ulid
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx

_COLUMNS = (
    "id, key, name, meter_slug, meter_group_by_filters, metadata, created_at, updated_at, "
    "archived_at"
)
ORDER_COLUMNS = {
    "id": "id",
    "key": "key",
    "name": "name",
    "createdAt": "created_at",
    "updatedAt": "updated_at",
}


def _json_or_none(value: Any) -> str | None:
    return None if not value else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _load(text: str | None) -> dict[str, str] | None:
    return None if not text else dict(json.loads(text))


def _feature(row: Row) -> Feature:
    return Feature(
        id=row[0],
        key=row[1],
        name=row[2],
        meter_slug=row[3],
        group_filters=_load(row[4]),
        metadata=_load(row[5]),
        created_at=from_micros(row[6]),
        updated_at=from_micros(row[7]),
        archived_at=None if row[8] is None else from_micros(row[8]),
    )


def insert(tx: Tx, f: Feature) -> None:
    advanced = f.advanced_filters()
    tx.execute(
        "INSERT INTO features (id, key, name, meter_slug, meter_group_by_filters, "
        "advanced_meter_group_by_filters, metadata, created_at, updated_at, archived_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            f.id, f.key, f.name, f.meter_slug, _json_or_none(f.group_filters),
            _json_or_none(advanced), _json_or_none(f.metadata), to_micros(f.created_at),
            to_micros(f.updated_at),
        ),
    )  # fmt: skip


def live_by_key(tx: Tx, key: str) -> Feature | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM features WHERE key = ? AND archived_at IS NULL", (key,))
    return None if row is None else _feature(row)


def by_id(tx: Tx, feature_id: str) -> Feature | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM features WHERE id = ?", (feature_id,))
    return None if row is None else _feature(row)


def live_by_id_or_key(tx: Tx, id_or_key: str) -> Feature | None:
    """Non-archived feature by id (ULID) or key."""
    if is_ulid(id_or_key):
        found = by_id(tx, id_or_key)
        if found is not None and found.archived_at is None:
            return found
    return live_by_key(tx, id_or_key)


def ids_for(tx: Tx, ids_or_keys: Sequence[str]) -> list[str]:
    """Feature ids (archived too) matching any of the given ids or keys."""
    if not ids_or_keys:
        return []
    marks = ", ".join("?" for _ in ids_or_keys)
    rows = tx.execute(
        f"SELECT id FROM features WHERE id IN ({marks}) OR key IN ({marks})",
        (*ids_or_keys, *ids_or_keys),
    )
    return [r[0] for r in rows]


def archive(tx: Tx, feature_id: str, at_us: int) -> bool:
    return (
        tx.rowcount(
            "UPDATE features SET archived_at = ?, updated_at = ? "
            "WHERE id = ? AND archived_at IS NULL",
            (at_us, at_us, feature_id),
        )
        > 0
    )


def list_features(
    tx: Tx,
    meter_slugs: Sequence[str],
    include_archived: bool,
    order_by: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[Feature], int]:
    where: list[str] = []
    params: list[Any] = []
    if meter_slugs:
        where.append(f"meter_slug IN ({', '.join('?' for _ in meter_slugs)})")
        params.extend(meter_slugs)
    if not include_archived:
        where.append("archived_at IS NULL")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total_row = tx.one(f"SELECT COUNT(*) FROM features{clause}", params)
    total = int(total_row[0]) if total_row else 0
    direction = "DESC" if descending else "ASC"
    column = ORDER_COLUMNS[order_by]
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM features{clause} ORDER BY {column} {direction}, id {direction} "
        "LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return [_feature(r) for r in rows], total
