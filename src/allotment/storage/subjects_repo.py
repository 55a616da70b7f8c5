"""Subjects: one row per subject, soft-deleted; one live row per key (``subjects_key_live``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx


@dataclass(frozen=True)
class SubjectRecord:
    id: str
    key: str
    display_name: str | None
    metadata: dict[str, Any] | None
    stripe_customer_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


_COLUMNS = (
    "id, key, display_name, metadata, stripe_customer_id, current_period_start,"
    " current_period_end, created_at, updated_at, deleted_at"
)

UPDATABLE = (
    "display_name",
    "metadata",
    "stripe_customer_id",
    "current_period_start",
    "current_period_end",
)
"""Columns a partial update may set (values in their domain form; None clears)."""


def _time_or_none(us: int | None) -> datetime | None:
    return None if us is None else from_micros(int(us))


def _from_row(row: Row) -> SubjectRecord:
    return SubjectRecord(
        id=row[0],
        key=row[1],
        display_name=row[2],
        metadata=None if row[3] is None else json.loads(row[3]),
        stripe_customer_id=row[4],
        current_period_start=_time_or_none(row[5]),
        current_period_end=_time_or_none(row[6]),
        created_at=from_micros(int(row[7])),
        updated_at=from_micros(int(row[8])),
        deleted_at=_time_or_none(row[9]),
    )


def _to_column(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column == "metadata":
        return json.dumps(value, separators=(",", ":"))
    if column in ("current_period_start", "current_period_end"):
        return to_micros(value)
    return value


def get_live_by_key(tx: Tx, key: str) -> SubjectRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM subjects WHERE key = ? AND deleted_at IS NULL", (key,))
    return None if row is None else _from_row(row)


def get_by_id(tx: Tx, subject_id: str) -> SubjectRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM subjects WHERE id = ?", (subject_id,))
    return None if row is None else _from_row(row)


def list_live(tx: Tx) -> list[SubjectRecord]:
    rows = tx.execute(f"SELECT {_COLUMNS} FROM subjects WHERE deleted_at IS NULL ORDER BY id")
    return [_from_row(r) for r in rows]


def insert(tx: Tx, record: SubjectRecord) -> None:
    """Raises DuplicateKey when a live subject with the key exists (even uncommitted elsewhere)."""
    tx.execute(
        f"INSERT INTO subjects ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.key,
            record.display_name,
            _to_column("metadata", record.metadata),
            record.stripe_customer_id,
            _to_column("current_period_start", record.current_period_start),
            _to_column("current_period_end", record.current_period_end),
            to_micros(record.created_at),
            to_micros(record.updated_at),
            None,
        ),
    )


def update_fields(
    tx: Tx, subject_id: str, fields: Mapping[str, Any], updated_at: datetime
) -> SubjectRecord | None:
    """Set only the given columns (a partial update); None when the row is gone."""
    unknown = set(fields) - set(UPDATABLE)
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    columns = [c for c in UPDATABLE if c in fields]
    assignments = ", ".join([*(f"{c} = ?" for c in columns), "updated_at = ?"])
    params = [*(_to_column(c, fields[c]) for c in columns), to_micros(updated_at), subject_id]
    row = tx.one(
        f"UPDATE subjects SET {assignments} WHERE id = ? AND deleted_at IS NULL"
        f" RETURNING {_COLUMNS}",
        params,
    )
    return None if row is None else _from_row(row)


def soft_delete(tx: Tx, subject_id: str, at: datetime) -> bool:
    changed = tx.rowcount(
        "UPDATE subjects SET deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
        (to_micros(at), to_micros(at), subject_id),
    )
    return changed > 0
