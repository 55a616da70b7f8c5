"""Grants table: SQL in, ``GrantRecord`` (wire facts + the engine's ``Grant``) out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from allotment.domain.grants import Grant
from allotment.domain.periods import Recurrence, parse_interval
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx, dec


@dataclass(frozen=True, slots=True)
class GrantRecord:
    id: str
    entitlement_id: str
    subject_key: str
    amount: Decimal
    priority: int
    effective_at: datetime
    expiration_duration: str | None
    expiration_count: int | None
    expires_at: datetime | None
    max_rollover: Decimal
    min_rollover: Decimal
    recurrence_interval: str | None
    recurrence_anchor: datetime | None
    metadata: Mapping[str, str] | None
    annotations: Mapping[str, Any] | None
    created_at: datetime
    updated_at: datetime
    voided_at: datetime | None = None
    deleted_at: datetime | None = None

    def recurrence(self) -> Recurrence | None:
        if self.recurrence_interval is None or self.recurrence_anchor is None:
            return None
        return Recurrence(parse_interval(self.recurrence_interval), self.recurrence_anchor)

    def to_domain(self) -> Grant:
        return Grant(
            id=self.id,
            amount=self.amount,
            priority=self.priority,
            effective_at=self.effective_at,
            expires_at=self.expires_at,
            created_at=self.created_at,
            voided_at=self.voided_at,
            deleted_at=self.deleted_at,
            min_rollover=self.min_rollover,
            max_rollover=self.max_rollover,
            recurrence=self.recurrence(),
        )


_COLUMNS = (
    "id, entitlement_id, subject_key, amount, priority, effective_at, expiration_duration, "
    "expiration_count, expires_at, max_rollover, min_rollover, recurrence_interval, "
    "recurrence_anchor, metadata, annotations, created_at, updated_at, voided_at, deleted_at"
)
ORDER_COLUMNS = {
    "id": "g.id",
    "createdAt": "g.created_at",
    "updatedAt": "g.updated_at",
    "effectiveAt": "g.effective_at",
}


def _t(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def _us(at: datetime | None) -> int | None:
    return None if at is None else to_micros(at)


def _json(value: Any) -> str | None:
    return None if not value else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if not text else json.loads(text)


def _record(row: Row) -> GrantRecord:
    return GrantRecord(
        id=row[0],
        entitlement_id=row[1],
        subject_key=row[2],
        amount=dec(row[3]),
        priority=int(row[4]),
        effective_at=from_micros(row[5]),
        expiration_duration=row[6],
        expiration_count=row[7],
        expires_at=_t(row[8]),
        max_rollover=dec(row[9]),
        min_rollover=dec(row[10]),
        recurrence_interval=row[11],
        recurrence_anchor=_t(row[12]),
        metadata=_load(row[13]),
        annotations=_load(row[14]),
        created_at=from_micros(row[15]),
        updated_at=from_micros(row[16]),
        voided_at=_t(row[17]),
        deleted_at=_t(row[18]),
    )


def insert(tx: Tx, g: GrantRecord) -> None:
    tx.execute(
        f"INSERT INTO grants ({_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            g.id, g.entitlement_id, g.subject_key, g.amount, g.priority,
            to_micros(g.effective_at), g.expiration_duration, g.expiration_count,
            _us(g.expires_at), g.max_rollover, g.min_rollover, g.recurrence_interval,
            _us(g.recurrence_anchor), _json(g.metadata), _json(g.annotations),
            to_micros(g.created_at), to_micros(g.updated_at), _us(g.voided_at),
            _us(g.deleted_at),
        ),
    )  # fmt: skip


def by_id(tx: Tx, grant_id: str) -> GrantRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM grants WHERE id = ?", (grant_id,))
    return None if row is None else _record(row)


def of_entitlement(tx: Tx, entitlement_id: str, include_deleted: bool = True) -> list[GrantRecord]:
    """All grants of an entitlement (the engine needs voided and deleted ones too)."""
    extra = "" if include_deleted else " AND deleted_at IS NULL"
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM grants WHERE entitlement_id = ?{extra} "
        "ORDER BY effective_at, created_at, id",
        (entitlement_id,),
    )
    return [_record(r) for r in rows]


def count_live(tx: Tx, entitlement_id: str) -> int:
    row = tx.one(
        "SELECT COUNT(*) FROM grants WHERE entitlement_id = ? AND deleted_at IS NULL",
        (entitlement_id,),
    )
    return int(row[0]) if row else 0


def void(tx: Tx, grant_id: str, at_us: int, now_us: int) -> bool:
    return (
        tx.rowcount(
            "UPDATE grants SET voided_at = ?, updated_at = ? WHERE id = ? AND voided_at IS NULL",
            (at_us, now_us, grant_id),
        )
        > 0
    )


def delete_for_entitlement(tx: Tx, entitlement_id: str, at_us: int) -> None:
    tx.execute(
        "UPDATE grants SET deleted_at = ?, updated_at = ? "
        "WHERE entitlement_id = ? AND deleted_at IS NULL",
        (at_us, at_us, entitlement_id),
    )


def list_all(
    tx: Tx,
    *,
    feature_ids: Sequence[str] | None,
    subject_keys: Sequence[str],
    include_deleted: bool,
    order_by: str,
    descending: bool,
    limit: int,
    offset: int,
    customer_ids: Sequence[str] | None = None,
) -> tuple[list[GrantRecord], int]:
    """Grants across entitlements. ``feature_ids`` None = any, [] = none. ``customer_ids``
    None: of subject-owned entitlements; else of these customers' (any customer's if empty)."""
    where: list[str] = []
    params: list[Any] = []
    if customer_ids is None:
        where.append("e.customer_id = ''")
    elif customer_ids:
        where.append(f"e.customer_id IN ({', '.join('?' for _ in customer_ids)})")
        params.extend(customer_ids)
    else:
        where.append("e.customer_id <> ''")
    if feature_ids is not None:
        if not feature_ids:
            return [], 0
        where.append(f"e.feature_id IN ({', '.join('?' for _ in feature_ids)})")
        params.extend(feature_ids)
    if subject_keys:
        where.append(f"g.subject_key IN ({', '.join('?' for _ in subject_keys)})")
        params.extend(subject_keys)
    if not include_deleted:
        where.append("g.deleted_at IS NULL")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    source = "grants g JOIN entitlements e ON e.id = g.entitlement_id"
    total_row = tx.one(f"SELECT COUNT(*) FROM {source}{clause}", params)
    total = int(total_row[0]) if total_row else 0
    direction = "DESC" if descending else "ASC"
    cols = ", ".join("g." + c.strip() for c in _COLUMNS.split(","))
    rows = tx.execute(
        f"SELECT {cols} FROM {source}{clause} "
        f"ORDER BY {ORDER_COLUMNS[order_by]} {direction}, g.id {direction} LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return [_record(r) for r in rows], total
