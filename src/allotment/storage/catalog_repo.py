"""The `/v1` catalog tables (migrations 0550, 0551): SQL in, catalog domain objects out.

Typed features live in the shared ``features`` table (the base row is written by
``features_repo``; this module adds and reads the typed columns).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from allotment.domain.catalog import FeatureSpec, TypedFeature, TypedValue, typed
from allotment.domain.catalog_plans import Plan, PlanVersion, Subscription
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage import usage_marks
from allotment.storage.database import Database, Row, Tx
from allotment.storage.features_repo import _COLUMNS as _FEATURE_COLUMNS
from allotment.storage.features_repo import _feature

_TYPED = "feature_type, enum_values, currency, usage_period, rate_window, description"


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- catalog version


def bump(tx: Tx) -> None:
    tx.execute("UPDATE catalog_version SET version = version + 1 WHERE id = 1")


_VERSION = "SELECT version FROM catalog_version WHERE id = 1"
VERSION_STATEMENT = _VERSION
"""The catalog version as one statement of one column (for a caller joining it to its own)."""


def version(tx: Tx) -> int:
    row = tx.one(_VERSION)
    return int(row[0]) if row else 0


def current_version(db: Database) -> int:
    """:func:`version` as one statement of its own (the one call's cache check: one round
    trip on PostgreSQL instead of a transaction's four)."""
    return int(usage_marks.read_one(db, _VERSION)[0])


# ---------------------------------------------------------------- typed features


def _typed(row: Row) -> TypedFeature:
    base = _feature(row[:9])
    enum_values = json.loads(row[10]) if row[10] else None
    return typed(base, row[9], enum_values, row[11], row[12], row[13], row[14])


def set_type(tx: Tx, feature_id: str, spec: FeatureSpec) -> None:
    tx.execute(
        "UPDATE features SET feature_type = ?, enum_values = ?, currency = ?, usage_period = ?, "
        "rate_window = ?, description = ? WHERE id = ?",
        (
            spec.type, None if spec.enum_values is None else _dump(list(spec.enum_values)),
            spec.currency, spec.usage_period, spec.rate_window, spec.description, feature_id,
        ),
    )  # fmt: skip


def live_feature(tx: Tx, reference: str) -> TypedFeature | None:
    row = tx.one(
        f"SELECT {_FEATURE_COLUMNS}, {_TYPED} FROM features WHERE key = ? AND archived_at IS NULL",
        (reference,),
    )
    return None if row is None else _typed(row)


def live_features(tx: Tx, references: Sequence[str]) -> dict[str, TypedFeature]:
    if not references:
        return {}
    marks = ", ".join("?" for _ in references)
    rows = tx.execute(
        f"SELECT {_FEATURE_COLUMNS}, {_TYPED} FROM features "
        f"WHERE key IN ({marks}) AND archived_at IS NULL",
        tuple(references),
    )
    found = (_typed(r) for r in rows)
    return {f.reference: f for f in found}


def list_features(tx: Tx, after: str | None, limit: int) -> list[TypedFeature]:
    """Live features in reference order, after the cursor; ``limit`` + 1 rows at most."""
    rows = tx.execute(
        f"SELECT {_FEATURE_COLUMNS}, {_TYPED} FROM features "
        "WHERE archived_at IS NULL AND key > ? ORDER BY key LIMIT ?",
        (after or "", limit + 1),
    )
    return [_typed(r) for r in rows]


# ---------------------------------------------------------------- plans

_PLAN = "id, reference, name, description, active_version, created_at, updated_at, archived_at"


def _plan(row: Row) -> Plan:
    return Plan(
        id=row[0], reference=row[1], name=row[2], description=row[3],
        active_version=int(row[4]), created_at=from_micros(row[5]),
        updated_at=from_micros(row[6]),
        archived_at=None if row[7] is None else from_micros(row[7]),
    )  # fmt: skip


def _values(text: str) -> tuple[TypedValue, ...]:
    return tuple(
        TypedValue(item["feature_reference"], item["type"], item["value"])
        for item in json.loads(text)
    )


def dump_values(values: Sequence[TypedValue]) -> str:
    return _dump(
        [{"feature_reference": v.feature_reference, "type": v.type, "value": dict(v.data)}
         for v in values]
    )  # fmt: skip


def insert_plan(tx: Tx, plan: Plan) -> None:
    tx.execute(
        f"INSERT INTO pricing_plans ({_PLAN}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        (plan.id, plan.reference, plan.name, plan.description, plan.active_version,
         to_micros(plan.created_at), to_micros(plan.updated_at)),
    )  # fmt: skip


def plan_by_reference(tx: Tx, reference: str) -> Plan | None:
    row = tx.one(f"SELECT {_PLAN} FROM pricing_plans WHERE reference = ?", (reference,))
    return None if row is None else _plan(row)


def plan_by_id(tx: Tx, plan_id: str) -> Plan | None:
    row = tx.one(f"SELECT {_PLAN} FROM pricing_plans WHERE id = ?", (plan_id,))
    return None if row is None else _plan(row)


def plans_by_ids(tx: Tx, ids: Sequence[str]) -> dict[str, Plan]:
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = tx.execute(f"SELECT {_PLAN} FROM pricing_plans WHERE id IN ({marks})", tuple(ids))
    return {p.id: p for p in map(_plan, rows)}


def list_plans(tx: Tx, after: str | None, limit: int, include_archived: bool) -> list[Plan]:
    archived = "" if include_archived else " AND archived_at IS NULL"
    rows = tx.execute(
        f"SELECT {_PLAN} FROM pricing_plans WHERE reference > ?{archived} "
        "ORDER BY reference LIMIT ?",
        (after or "", limit + 1),
    )
    return [_plan(r) for r in rows]


def set_active_version(tx: Tx, plan_id: str, version_no: int, at_us: int) -> None:
    tx.execute(
        "UPDATE pricing_plans SET active_version = ?, updated_at = ? WHERE id = ?",
        (version_no, at_us, plan_id),
    )


def archive_plan(tx: Tx, plan_id: str, at_us: int) -> bool:
    return (
        tx.rowcount(
            "UPDATE pricing_plans SET archived_at = ?, updated_at = ? "
            "WHERE id = ? AND archived_at IS NULL",
            (at_us, at_us, plan_id),
        )
        > 0
    )


def insert_version(tx: Tx, v: PlanVersion) -> None:
    tx.execute(
        "INSERT INTO pricing_plan_versions (plan_id, version, entitlements, created_at) "
        "VALUES (?, ?, ?, ?)",
        (v.plan_id, v.version, dump_values(v.values), to_micros(v.created_at)),
    )


def plan_version(tx: Tx, plan_id: str, version_no: int) -> PlanVersion | None:
    row = tx.one(
        "SELECT plan_id, version, entitlements, created_at FROM pricing_plan_versions "
        "WHERE plan_id = ? AND version = ?",
        (plan_id, version_no),
    )
    if row is None:
        return None
    return PlanVersion(row[0], int(row[1]), _values(row[2]), from_micros(row[3]))


def version_numbers(tx: Tx, plan_id: str) -> list[tuple[int, int]]:
    """(version, created_at µs) of every version of a plan, oldest first."""
    rows = tx.execute(
        "SELECT version, created_at FROM pricing_plan_versions WHERE plan_id = ? ORDER BY version",
        (plan_id,),
    )
    return [(int(r[0]), int(r[1])) for r in rows]


# ---------------------------------------------------------------- subscriptions

_SUB = (
    "id, customer_id, plan_id, plan_version, status, start_at, end_at, overrides, created_at, "
    "updated_at"
)


def _subscription(row: Row) -> Subscription:
    overrides = {v.feature_reference: v for v in _values(row[7])}
    return Subscription(
        id=row[0], customer_id=row[1], plan_id=row[2], plan_version=int(row[3]),
        status=row[4], start_at=from_micros(row[5]),
        end_at=None if row[6] is None else from_micros(row[6]), overrides=overrides,
        created_at=from_micros(row[8]), updated_at=from_micros(row[9]),
    )  # fmt: skip


def insert_subscription(tx: Tx, s: Subscription, now_us: int) -> None:
    tx.execute(
        f"INSERT INTO pricing_plan_subscriptions ({_SUB}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (s.id, s.customer_id, s.plan_id, s.plan_version, s.status, to_micros(s.start_at),
         None if s.end_at is None else to_micros(s.end_at),
         dump_values(list(s.overrides.values())), now_us, now_us),
    )  # fmt: skip


def update_subscription(tx: Tx, s: Subscription, now_us: int) -> None:
    tx.execute(
        "UPDATE pricing_plan_subscriptions SET plan_id = ?, plan_version = ?, status = ?, "
        "end_at = ?, overrides = ?, updated_at = ? WHERE id = ?",
        (s.plan_id, s.plan_version, s.status,
         None if s.end_at is None else to_micros(s.end_at),
         dump_values([s.overrides[k] for k in sorted(s.overrides)]), now_us, s.id),
    )  # fmt: skip


def subscription(tx: Tx, subscription_id: str, *, lock: bool = False) -> Subscription | None:
    suffix = " FOR UPDATE" if lock and tx.dialect == "postgresql" else ""
    row = tx.one(
        f"SELECT {_SUB} FROM pricing_plan_subscriptions WHERE id = ?{suffix}", (subscription_id,)
    )
    return None if row is None else _subscription(row)


def active_subscription(tx: Tx, customer_id: str) -> Subscription | None:
    row = tx.one(
        f"SELECT {_SUB} FROM pricing_plan_subscriptions WHERE customer_id = ? "
        "AND status = 'ACTIVE'",
        (customer_id,),
    )
    return None if row is None else _subscription(row)


def subscriptions_of(
    tx: Tx, customer_id: str | None, before: str | None, limit: int
) -> list[Subscription]:
    """Newest first (ids are ULIDs); ``before`` is the cursor (the last id seen)."""
    where, params = ["id < ?"], [before or "~"]
    if customer_id is not None:
        where.append("customer_id = ?")
        params.append(customer_id)
    rows = tx.execute(
        f"SELECT {_SUB} FROM pricing_plan_subscriptions WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT ?",
        (*params, limit + 1),
    )
    return [_subscription(r) for r in rows]


def active_customers_of_plan(tx: Tx, plan_id: str) -> list[str]:
    rows = tx.execute(
        "SELECT customer_id FROM pricing_plan_subscriptions WHERE plan_id = ? "
        "AND status = 'ACTIVE' ORDER BY customer_id",
        (plan_id,),
    )
    return [r[0] for r in rows]
