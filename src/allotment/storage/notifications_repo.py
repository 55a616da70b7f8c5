"""Notification channels, rules, events, the delivery outbox and the firing marks.

Tables (migration 0650): ``notification_channels`` and ``notification_rules`` (soft-deleted),
``notification_events`` (the exact JSON body delivered) with their outbox rows
(``notification_deliveries``, written by :func:`insert_event` in the event's transaction; read
and updated by :mod:`allotment.storage.notification_outbox`) and ``notification_marks`` (what
already fired: one row per rule, entitlement, usage period and threshold or reset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from allotment.domain.notifications import DeliveryState, RuleType, Threshold, ThresholdType
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    id: str
    name: str
    disabled: bool
    url: str
    custom_headers: Mapping[str, str]
    signing_secret: str
    metadata: Mapping[str, str] | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    type: str = "WEBHOOK"


@dataclass(frozen=True, slots=True)
class RuleRecord:
    id: str
    type: RuleType
    name: str
    disabled: bool
    thresholds: tuple[Threshold, ...]
    feature_ids: tuple[str, ...] | None
    channel_ids: tuple[str, ...]
    metadata: Mapping[str, str] | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: str
    type: str
    rule_id: str
    subject_key: str | None
    feature_id: str | None
    feature_key: str | None
    payload: str
    annotations: Mapping[str, Any] | None
    created_at: datetime


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _t(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def _us(at: datetime | None) -> int | None:
    return None if at is None else to_micros(at)


def _in(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


ORDER_COLUMNS = {"id": "id", "type": "type", "createdAt": "created_at", "updatedAt": "updated_at"}

# ---------------------------------------------------------------- channels

_CH = (
    "id, name, disabled, url, custom_headers, signing_secret, metadata, created_at, "
    "updated_at, deleted_at"
)


def _channel(r: Row) -> ChannelRecord:
    return ChannelRecord(
        id=r[0], name=r[1], disabled=bool(r[2]), url=r[3], custom_headers=_load(r[4]) or {},
        signing_secret=r[5], metadata=_load(r[6]), created_at=from_micros(r[7]),
        updated_at=from_micros(r[8]), deleted_at=_t(r[9]),
    )  # fmt: skip


def save_channel(tx: Tx, c: ChannelRecord) -> None:
    """Insert or replace a channel (all columns)."""
    tx.execute(
        f"INSERT INTO notification_channels (type, {_CH}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, disabled = excluded.disabled, "
        "url = excluded.url, custom_headers = excluded.custom_headers, "
        "signing_secret = excluded.signing_secret, metadata = excluded.metadata, "
        "updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
        (
            c.type, c.id, c.name, int(c.disabled), c.url, _json(dict(c.custom_headers) or None),
            c.signing_secret, _json(c.metadata), to_micros(c.created_at),
            to_micros(c.updated_at), _us(c.deleted_at),
        ),
    )  # fmt: skip


def channel(tx: Tx, channel_id: str) -> ChannelRecord | None:
    row = tx.one(f"SELECT {_CH} FROM notification_channels WHERE id = ?", (channel_id,))
    return None if row is None else _channel(row)


def channels(tx: Tx, ids: Sequence[str]) -> dict[str, ChannelRecord]:
    if not ids:
        return {}
    rows = tx.execute(
        f"SELECT {_CH} FROM notification_channels WHERE id IN ({_in(ids)})", tuple(ids)
    )
    return {r[0]: _channel(r) for r in rows}


def list_channels(
    tx: Tx,
    *,
    include_deleted: bool,
    include_disabled: bool,
    order_by: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[ChannelRecord], int]:
    where = []
    if not include_deleted:
        where.append("deleted_at IS NULL")
    if not include_disabled:
        where.append("disabled = 0")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = tx.one(f"SELECT COUNT(*) FROM notification_channels{clause}")
    d = "DESC" if descending else "ASC"
    rows = tx.execute(
        f"SELECT {_CH} FROM notification_channels{clause} "
        f"ORDER BY {ORDER_COLUMNS[order_by]} {d}, id {d} LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [_channel(r) for r in rows], int(total[0]) if total else 0


# ---------------------------------------------------------------- rules

_RU = (
    "id, type, name, disabled, thresholds, feature_ids, channel_ids, metadata, created_at, "
    "updated_at, deleted_at"
)


def _thresholds_json(ts: Sequence[Threshold]) -> str | None:
    if not ts:
        return None
    return _json([{"value": str(t.value), "type": t.type.value} for t in ts])


def _rule(r: Row) -> RuleRecord:
    ts = tuple(
        Threshold(Decimal(t["value"]), ThresholdType(t["type"])) for t in (_load(r[4]) or [])
    )
    features = _load(r[5])
    return RuleRecord(
        id=r[0], type=RuleType(r[1]), name=r[2], disabled=bool(r[3]), thresholds=ts,
        feature_ids=tuple(features) if features is not None else None,
        channel_ids=tuple(_load(r[6]) or ()), metadata=_load(r[7]),
        created_at=from_micros(r[8]), updated_at=from_micros(r[9]), deleted_at=_t(r[10]),
    )  # fmt: skip


def save_rule(tx: Tx, r: RuleRecord) -> None:
    tx.execute(
        f"INSERT INTO notification_rules ({_RU}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET type = excluded.type, name = excluded.name, "
        "disabled = excluded.disabled, thresholds = excluded.thresholds, "
        "feature_ids = excluded.feature_ids, channel_ids = excluded.channel_ids, "
        "metadata = excluded.metadata, updated_at = excluded.updated_at, "
        "deleted_at = excluded.deleted_at",
        (
            r.id, r.type.value, r.name, int(r.disabled), _thresholds_json(r.thresholds),
            _json(list(r.feature_ids)) if r.feature_ids is not None else None,
            _json(list(r.channel_ids)), _json(r.metadata), to_micros(r.created_at),
            to_micros(r.updated_at), _us(r.deleted_at),
        ),
    )  # fmt: skip


def rule(tx: Tx, rule_id: str) -> RuleRecord | None:
    row = tx.one(f"SELECT {_RU} FROM notification_rules WHERE id = ?", (rule_id,))
    return None if row is None else _rule(row)


def rules_by_id(tx: Tx, ids: Sequence[str]) -> dict[str, RuleRecord]:
    if not ids:
        return {}
    rows = tx.execute(f"SELECT {_RU} FROM notification_rules WHERE id IN ({_in(ids)})", tuple(ids))
    return {r[0]: _rule(r) for r in rows}


def all_rules(tx: Tx, *, include_deleted: bool) -> list[RuleRecord]:
    clause = "" if include_deleted else " WHERE deleted_at IS NULL"
    return [_rule(r) for r in tx.execute(f"SELECT {_RU} FROM notification_rules{clause}")]


def rules_version(tx: Tx) -> tuple[int, int]:
    """Changes whenever a rule or channel is written (count and latest update)."""
    row = tx.one(
        "SELECT (SELECT COUNT(*) FROM notification_rules) + "
        "(SELECT COUNT(*) FROM notification_channels), "
        "COALESCE((SELECT MAX(updated_at) FROM notification_rules), 0) + "
        "COALESCE((SELECT MAX(updated_at) FROM notification_channels), 0)"
    )
    return (int(row[0]), int(row[1])) if row else (0, 0)


# ---------------------------------------------------------------- events and the outbox

_EV = "id, type, rule_id, subject_key, feature_id, feature_key, payload, annotations, created_at"


def _event(r: Row) -> EventRecord:
    return EventRecord(
        id=r[0], type=r[1], rule_id=r[2], subject_key=r[3], feature_id=r[4], feature_key=r[5],
        payload=r[6], annotations=_load(r[7]), created_at=from_micros(r[8]),
    )  # fmt: skip


def insert_event(tx: Tx, ev: EventRecord, channel_ids: Sequence[str]) -> None:
    """The event and its outbox rows (one PENDING delivery per channel, due now)."""
    now_us = to_micros(ev.created_at)
    tx.execute(
        f"INSERT INTO notification_events ({_EV}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.id, ev.type, ev.rule_id, ev.subject_key, ev.feature_id, ev.feature_key,
            ev.payload, _json(ev.annotations), now_us,
        ),
    )  # fmt: skip
    tx.execute_many(
        "INSERT INTO notification_deliveries (event_id, channel_id, state, reason, "
        "attempts_made, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
        [(ev.id, c, DeliveryState.PENDING.value, "waiting to be sent", now_us, now_us)
         for c in channel_ids],
    )  # fmt: skip


def insert_mark(
    tx: Tx, rule_id: str, entitlement_id: str, period_start: datetime, mark: str, event_id: str
) -> bool:
    """Record that ``mark`` fired; False when it already had (another writer won)."""
    return (
        tx.rowcount(
            "INSERT INTO notification_marks (rule_id, entitlement_id, period_start, mark, "
            "event_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (rule_id, entitlement_id, to_micros(period_start), mark, event_id),
        )
        == 1
    )


def marks(tx: Tx, rule_id: str, entitlement_id: str, period_start: datetime) -> set[str]:
    rows = tx.execute(
        "SELECT mark FROM notification_marks WHERE rule_id = ? AND entitlement_id = ? "
        "AND period_start = ?",
        (rule_id, entitlement_id, to_micros(period_start)),
    )
    return {r[0] for r in rows}


def marks_of_entitlement(
    tx: Tx, entitlement_id: str, period_start: datetime | None
) -> dict[tuple[str, datetime], set[str]]:
    """Marks of one entitlement: every mark of the period starting at ``period_start`` and
    every reset mark, by (rule id, period start)."""
    rows = tx.execute(
        "SELECT rule_id, period_start, mark FROM notification_marks WHERE entitlement_id = ? "
        "AND (period_start = ? OR mark = 'reset')",
        (entitlement_id, _us(period_start) if period_start is not None else -1),
    )
    out: dict[tuple[str, datetime], set[str]] = {}
    for r in rows:
        out.setdefault((r[0], from_micros(r[1])), set()).add(r[2])
    return out


def event(tx: Tx, event_id: str) -> EventRecord | None:
    row = tx.one(f"SELECT {_EV} FROM notification_events WHERE id = ?", (event_id,))
    return None if row is None else _event(row)


@dataclass(frozen=True, slots=True)
class EventFilter:
    from_: datetime | None = None
    to: datetime | None = None
    features: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()


def list_events(
    tx: Tx, f: EventFilter, *, order_by: str, descending: bool, limit: int, offset: int
) -> tuple[list[EventRecord], int]:
    where: list[str] = []
    params: list[Any] = []
    if f.from_ is not None:
        where.append("created_at >= ?")
        params.append(to_micros(f.from_))
    if f.to is not None:
        where.append("created_at <= ?")
        params.append(to_micros(f.to))
    if f.features:
        where.append(f"(feature_id IN ({_in(f.features)}) OR feature_key IN ({_in(f.features)}))")
        params.extend([*f.features, *f.features])
    if f.subjects:
        where.append(f"subject_key IN ({_in(f.subjects)})")
        params.extend(f.subjects)
    if f.rules:
        where.append(f"rule_id IN ({_in(f.rules)})")
        params.extend(f.rules)
    if f.channels:
        where.append(
            "EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.event_id = "
            f"notification_events.id AND d.channel_id IN ({_in(f.channels)}))"
        )
        params.extend(f.channels)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = tx.one(f"SELECT COUNT(*) FROM notification_events{clause}", params)
    d = "DESC" if descending else "ASC"
    rows = tx.execute(
        f"SELECT {_EV} FROM notification_events{clause} "
        f"ORDER BY {ORDER_COLUMNS[order_by]} {d}, id {d} LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return [_event(r) for r in rows], int(total[0]) if total else 0
