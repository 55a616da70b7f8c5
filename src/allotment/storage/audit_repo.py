"""Audit events table: one row per admin change, newest first when listed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx


@dataclass(frozen=True)
class AuditEvent:
    id: str
    at: datetime
    actor: str
    key_id: str | None
    method: str
    route: str
    resource: str
    status: int
    before_json: str | None
    after_json: str | None


_COLUMNS = "id, at, actor, key_id, method, route, resource, status, before_json, after_json"


def _event(row: Row) -> AuditEvent:
    return AuditEvent(
        id=row[0],
        at=from_micros(int(row[1])),
        actor=row[2],
        key_id=row[3],
        method=row[4],
        route=row[5],
        resource=row[6],
        status=int(row[7]),
        before_json=row[8],
        after_json=row[9],
    )


def insert(tx: Tx, e: AuditEvent) -> None:
    tx.execute(
        f"INSERT INTO audit_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            e.id, to_micros(e.at), e.actor, e.key_id, e.method, e.route, e.resource, e.status,
            e.before_json, e.after_json,
        ),
    )  # fmt: skip


def newest(tx: Tx, limit: int, before_id: str | None) -> list[AuditEvent]:
    """Newest first (ids are time-ordered ULIDs), strictly older than ``before_id``."""
    if before_id is None:
        rows = tx.execute(f"SELECT {_COLUMNS} FROM audit_events ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = tx.execute(
            f"SELECT {_COLUMNS} FROM audit_events WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id, limit),
        )
    return [_event(r) for r in rows]
