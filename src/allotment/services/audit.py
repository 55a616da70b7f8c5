"""The audit trail: one row per admin change (who, what, when, before and after).

The HTTP guard (:mod:`allotment.http.guard`) records every successful admin change made over
HTTP; the CLI records the key changes it makes itself. Secrets never enter the trail: fields
named ``secret``, ``token`` or ``signingSecret`` (a webhook channel's) are replaced by
``"[redacted]"`` wherever they appear.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from allotment.clock import Clock
from allotment.domain import limits
from allotment.domain.ids import new_ulid
from allotment.domain.timeutil import to_micros
from allotment.storage import audit_repo
from allotment.storage.audit_repo import AuditEvent
from allotment.storage.database import Database

REDACTED_FIELDS = frozenset({"secret", "token", "signingSecret"})


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "[redacted]" if k in REDACTED_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def snapshot(body: bytes | None) -> str | None:
    """A JSON response body as it is kept in the trail: redacted, bounded, or None."""
    if not body:
        return None
    if len(body) > limits.AUDIT_BODY_BYTES_MAX:
        return json.dumps({"truncated": True, "bytes": len(body)})
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return json.dumps(redact(parsed), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Change:
    actor: str
    key_id: str | None
    method: str
    route: str
    resource: str
    status: int
    before: str | None
    after: str | None


class AuditService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def record(self, change: Change) -> AuditEvent:
        now = self._clock.now()
        event = AuditEvent(
            id=new_ulid(to_micros(now) // 1000),
            at=now,
            actor=change.actor,
            key_id=change.key_id,
            method=change.method,
            route=change.route,
            resource=change.resource,
            status=change.status,
            before_json=change.before,
            after_json=change.after,
        )
        with self._db.write() as tx:
            audit_repo.insert(tx, event)
        return event

    def list(self, limit: int, cursor: str | None) -> list[AuditEvent]:
        with self._db.read() as tx:
            return audit_repo.newest(tx, limit, cursor)
