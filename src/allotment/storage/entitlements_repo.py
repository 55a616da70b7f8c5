"""Entitlements and their usage resets: SQL in, records out.

An entitlement row is immutable apart from ``deleted_at``/``updated_at``; usage resets are
append-only (one row per manual reset, unique per entitlement and instant).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from allotment.domain.entitlement_math import ManualReset
from allotment.domain.owners import Owner
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx, dec_or_none


@dataclass(frozen=True, slots=True)
class EntitlementRecord:
    id: str
    subject_key: str
    feature_id: str
    feature_key: str
    type: str
    metadata: Mapping[str, str] | None
    annotations: Mapping[str, Any] | None
    config: str | None
    usage_period_interval: str | None
    """ISO-8601 duration text of input 0 of the usage-period timeline."""
    usage_period_anchor: datetime | None
    measure_usage_from: datetime | None
    is_soft_limit: bool
    issue_after_reset: Decimal | None
    issue_after_reset_priority: int | None
    preserve_overage_at_reset: bool
    active_from: datetime
    active_to: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    customer_id: str = ""
    """The owning customer's id; "" when a subject owns it (then ``subject_key`` is its key;
    for a customer-owned entitlement ``subject_key`` is "")."""

    @property
    def owner(self) -> Owner:
        return Owner(self.subject_key, self.customer_id)

    def active_at(self, at: datetime) -> bool:
        """Half-open ``[activeFrom, activeTo or deletedAt)``."""
        ends = [t for t in (self.active_to, self.deleted_at) if t is not None]
        return self.active_from <= at and (not ends or at < min(ends))


_COLUMNS = (
    "id, subject_key, feature_id, feature_key, type, metadata, annotations, config, "
    "usage_period_interval, usage_period_anchor, measure_usage_from, is_soft_limit, "
    "issue_after_reset, issue_after_reset_priority, preserve_overage_at_reset, active_from, "
    "active_to, created_at, updated_at, deleted_at, customer_id"
)
ORDER_COLUMNS = {"createdAt": "created_at", "updatedAt": "updated_at", "id": "id"}


def _t(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def _us(at: datetime | None) -> int | None:
    return None if at is None else to_micros(at)


def _json(value: Any) -> str | None:
    return None if not value else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if not text else json.loads(text)


def _record(row: Row) -> EntitlementRecord:
    return EntitlementRecord(
        id=row[0],
        subject_key=row[1],
        feature_id=row[2],
        feature_key=row[3],
        type=row[4],
        metadata=_load(row[5]),
        annotations=_load(row[6]),
        config=row[7],
        usage_period_interval=row[8],
        usage_period_anchor=_t(row[9]),
        measure_usage_from=_t(row[10]),
        is_soft_limit=bool(row[11]),
        issue_after_reset=dec_or_none(row[12]),
        issue_after_reset_priority=row[13],
        preserve_overage_at_reset=bool(row[14]),
        active_from=from_micros(row[15]),
        active_to=_t(row[16]),
        created_at=from_micros(row[17]),
        updated_at=from_micros(row[18]),
        deleted_at=_t(row[19]),
        customer_id=row[20],
    )


def insert(tx: Tx, e: EntitlementRecord) -> None:
    tx.execute(
        f"INSERT INTO entitlements ({_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            e.id, e.subject_key, e.feature_id, e.feature_key, e.type, _json(e.metadata),
            _json(e.annotations), e.config, e.usage_period_interval, _us(e.usage_period_anchor),
            _us(e.measure_usage_from), int(e.is_soft_limit), e.issue_after_reset,
            e.issue_after_reset_priority, int(e.preserve_overage_at_reset),
            to_micros(e.active_from), _us(e.active_to), to_micros(e.created_at),
            to_micros(e.updated_at), _us(e.deleted_at), e.customer_id,
        ),
    )  # fmt: skip


def by_id(tx: Tx, entitlement_id: str) -> EntitlementRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM entitlements WHERE id = ?", (entitlement_id,))
    return None if row is None else _record(row)


def live_for(tx: Tx, owner: Owner, feature_key: str) -> EntitlementRecord | None:
    """The not-deleted entitlement of an owner for a feature key (at most one)."""
    row = tx.one(
        f"SELECT {_COLUMNS} FROM entitlements WHERE subject_key = ? AND customer_id = ? "
        "AND feature_key = ? AND deleted_at IS NULL",
        (owner.subject_key, owner.customer_id, feature_key),
    )
    return None if row is None else _record(row)


def active_for_feature_key_at(
    tx: Tx, owner: Owner, feature_key: str, at: datetime
) -> EntitlementRecord | None:
    """The owner's entitlement for a feature key that is active at ``at`` (newest first)."""
    at_us = to_micros(at)
    row = tx.one(
        f"SELECT {_COLUMNS} FROM entitlements WHERE subject_key = ? AND customer_id = ? "
        "AND feature_key = ? AND active_from <= ? AND (active_to IS NULL OR active_to > ?) "
        "AND (deleted_at IS NULL OR deleted_at > ?) ORDER BY active_from DESC, id DESC LIMIT 1",
        (owner.subject_key, owner.customer_id, feature_key, at_us, at_us, at_us),
    )
    return None if row is None else _record(row)


def lock(tx: Tx, entitlement_id: str, dialect: str) -> EntitlementRecord | None:
    """Re-read the entitlement holding its row lock until the transaction ends (PostgreSQL
    ``FOR UPDATE``; SQLite write transactions are already serialised)."""
    suffix = " FOR UPDATE" if dialect == "postgresql" else ""
    row = tx.one(f"SELECT {_COLUMNS} FROM entitlements WHERE id = ?{suffix}", (entitlement_id,))
    return None if row is None else _record(row)


def soft_delete(tx: Tx, entitlement_id: str, at_us: int) -> bool:
    return (
        tx.rowcount(
            "UPDATE entitlements SET deleted_at = ?, updated_at = ? "
            "WHERE id = ? AND deleted_at IS NULL",
            (at_us, at_us, entitlement_id),
        )
        > 0
    )


def list_for_owner(
    tx: Tx, owner: Owner, at: datetime, include_deleted: bool
) -> list[EntitlementRecord]:
    """The owner's entitlements active at ``at`` (plus deleted ones when asked)."""
    at_us = to_micros(at)
    active = (
        "(active_from <= ? AND (active_to IS NULL OR active_to > ?) "
        "AND (deleted_at IS NULL OR deleted_at > ?))"
    )
    if include_deleted:
        rows = tx.execute(
            f"SELECT {_COLUMNS} FROM entitlements WHERE subject_key = ? AND customer_id = ? "
            f"AND ({active} OR deleted_at IS NOT NULL) ORDER BY created_at, id",
            (owner.subject_key, owner.customer_id, at_us, at_us, at_us),
        )
    else:
        rows = tx.execute(
            f"SELECT {_COLUMNS} FROM entitlements WHERE subject_key = ? AND customer_id = ? "
            f"AND {active} ORDER BY created_at, id",
            (owner.subject_key, owner.customer_id, at_us, at_us, at_us),
        )
    return [_record(r) for r in rows]


def list_all(
    tx: Tx,
    *,
    feature_ids: Sequence[str] | None,
    subject_keys: Sequence[str],
    types: Sequence[str],
    exclude_inactive_at: datetime | None,
    order_by: str,
    descending: bool,
    limit: int,
    offset: int,
    customer_ids: Sequence[str] | None = None,
) -> tuple[list[EntitlementRecord], int]:
    """Entitlements, deleted ones excluded. ``feature_ids`` None = any, [] = none.
    ``customer_ids`` None: subject-owned entitlements only (``subject_keys`` filters them);
    otherwise customer-owned ones only, of these customers (all of them when empty)."""
    where = ["deleted_at IS NULL"]
    params: list[Any] = []
    if customer_ids is None:
        where.append("customer_id = ''")
    elif customer_ids:
        where.append(f"customer_id IN ({', '.join('?' for _ in customer_ids)})")
        params.extend(customer_ids)
    else:
        where.append("customer_id <> ''")
    if feature_ids is not None:
        if not feature_ids:
            return [], 0
        where.append(f"feature_id IN ({', '.join('?' for _ in feature_ids)})")
        params.extend(feature_ids)
    if subject_keys:
        where.append(f"subject_key IN ({', '.join('?' for _ in subject_keys)})")
        params.extend(subject_keys)
    if types:
        where.append(f"type IN ({', '.join('?' for _ in types)})")
        params.extend(types)
    if exclude_inactive_at is not None:
        at_us = to_micros(exclude_inactive_at)
        where.append("active_from <= ? AND (active_to IS NULL OR active_to > ?)")
        params.extend([at_us, at_us])
    clause = " WHERE " + " AND ".join(where)
    total_row = tx.one(f"SELECT COUNT(*) FROM entitlements{clause}", params)
    total = int(total_row[0]) if total_row else 0
    direction = "DESC" if descending else "ASC"
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM entitlements{clause} "
        f"ORDER BY {ORDER_COLUMNS[order_by]} {direction}, id {direction} LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return [_record(r) for r in rows], total


def live_of_customer(tx: Tx, customer_id: str) -> list[EntitlementRecord]:
    """The customer's not-deleted entitlements."""
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM entitlements WHERE subject_key = '' AND customer_id = ? "
        "AND deleted_at IS NULL ORDER BY created_at, id",
        (customer_id,),
    )
    return [_record(r) for r in rows]


def feature_keys_of_customer(tx: Tx, customer_id: str) -> list[str]:
    """Every feature key the customer has (had) an entitlement for, deleted ones included."""
    rows = tx.execute(
        "SELECT DISTINCT feature_key FROM entitlements WHERE subject_key = '' "
        "AND customer_id = ? ORDER BY feature_key",
        (customer_id,),
    )
    return [str(r[0]) for r in rows]


def update_terms(tx: Tx, e: EntitlementRecord) -> None:
    """Rewrite the in-place updatable terms of a live entitlement (the catalog's allowance,
    soft limit, config, metadata and annotations)."""
    tx.execute(
        "UPDATE entitlements SET issue_after_reset = ?, issue_after_reset_priority = ?, "
        "is_soft_limit = ?, config = ?, metadata = ?, annotations = ?, updated_at = ? "
        "WHERE id = ?",
        (
            e.issue_after_reset, e.issue_after_reset_priority, int(e.is_soft_limit), e.config,
            _json(e.metadata), _json(e.annotations), to_micros(e.updated_at), e.id,
        ),
    )  # fmt: skip


def subject_key_of_id(tx: Tx, subject_id: str) -> str | None:
    """The key of a live subject with this id (subjects are upserted through /subjects)."""
    row = tx.one("SELECT key FROM subjects WHERE id = ? AND deleted_at IS NULL", (subject_id,))
    return None if row is None else str(row[0])


# ---------------------------------------------------------------- usage resets


def insert_reset(
    tx: Tx,
    reset_id: str,
    entitlement_id: str,
    reset: ManualReset,
    anchor: datetime,
    interval_iso: str,
    created_at_us: int,
) -> None:
    tx.execute(
        "INSERT INTO usage_resets (id, entitlement_id, reset_at, anchor, interval_iso, "
        "preserve_overage, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            reset_id, entitlement_id, to_micros(reset.at), to_micros(anchor), interval_iso,
            int(reset.preserve_overage), created_at_us,
        ),
    )  # fmt: skip


def resets_of(tx: Tx, entitlement_id: str) -> list[ManualReset]:
    """Persisted resets in time order. ``retain_anchor`` is recovered from the stored anchor:
    a reset that re-anchors stores its own instant as the anchor (an anchor that already
    equals the reset instant gives the same timeline either way)."""
    rows = tx.execute(
        "SELECT reset_at, anchor, preserve_overage FROM usage_resets "
        "WHERE entitlement_id = ? ORDER BY reset_at",
        (entitlement_id,),
    )
    return [ManualReset(from_micros(r[0]), r[1] != r[0], bool(r[2])) for r in rows]


def _features_clause(
    column: str, feature_ids: Sequence[str] | None, joiner: str
) -> tuple[str, list[Any]] | None:
    """``joiner column IN (…)`` for these feature ids; "" for None (any); None for [] (none)."""
    if feature_ids is None:
        return "", []
    if not feature_ids:
        return None
    return f" {joiner} {column} IN ({', '.join('?' for _ in feature_ids)})", list(feature_ids)


def live_metered_for_meter_owner(
    tx: Tx, meter_id: str, owner: Owner, feature_ids: Sequence[str] | None
) -> list[EntitlementRecord]:
    """Not-deleted metered entitlements of an owner (subject or customer) whose feature counts
    this meter's usage (``feature_ids`` narrows them; None: any feature). Used by the
    notification evaluator."""
    narrow = _features_clause("e.feature_id", feature_ids, "AND")
    if narrow is None:
        return []
    cols = ", ".join("e." + c.strip() for c in _COLUMNS.split(","))
    rows = tx.execute(
        f"SELECT {cols} FROM entitlements e JOIN features f ON f.id = e.feature_id "
        "JOIN meters m ON m.slug = f.meter_slug AND m.deleted_at IS NULL "
        "WHERE m.id = ? AND e.subject_key = ? AND e.customer_id = ? AND e.type = 'metered' "
        f"AND e.deleted_at IS NULL{narrow[0]}",
        [meter_id, owner.subject_key, owner.customer_id, *narrow[1]],
    )
    return [_record(r) for r in rows]


def live_metered(tx: Tx, feature_ids: Sequence[str] | None) -> list[EntitlementRecord]:
    """Every not-deleted metered entitlement (of these features; None: any)."""
    narrow = _features_clause("feature_id", feature_ids, "AND")
    if narrow is None:
        return []
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM entitlements WHERE type = 'metered' AND deleted_at IS NULL"
        f"{narrow[0]}",
        narrow[1],
    )
    return [_record(r) for r in rows]


def meter_ids_of_features(tx: Tx, feature_ids: Sequence[str] | None) -> set[str]:
    """Ids of the live meters these features count (None: of every feature)."""
    narrow = _features_clause("f.id", feature_ids, "WHERE")
    if narrow is None:
        return set()
    rows = tx.execute(
        "SELECT DISTINCT m.id FROM features f JOIN meters m ON m.slug = f.meter_slug "
        f"AND m.deleted_at IS NULL{narrow[0]}",
        narrow[1],
    )
    return {r[0] for r in rows}
