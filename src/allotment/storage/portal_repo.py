"""Portal tokens (one row per issued token) and the shared token secret in ``server_settings``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx

SECRET_SETTING = "portal_token_secret"


@dataclass(frozen=True)
class PortalTokenRecord:
    id: str
    subject: str
    allowed_meter_slugs: tuple[str, ...] | None
    expires_at: datetime
    created_at: datetime
    invalidated_at: datetime | None


_COLUMNS = "id, subject, allowed_meter_slugs, expires_at, created_at, invalidated_at"


def _from_row(row: Row) -> PortalTokenRecord:
    return PortalTokenRecord(
        id=row[0],
        subject=row[1],
        allowed_meter_slugs=None if row[2] is None else tuple(json.loads(row[2])),
        expires_at=from_micros(int(row[3])),
        created_at=from_micros(int(row[4])),
        invalidated_at=None if row[5] is None else from_micros(int(row[5])),
    )


def insert(tx: Tx, record: PortalTokenRecord) -> None:
    slugs = (
        None if record.allowed_meter_slugs is None else json.dumps(list(record.allowed_meter_slugs))
    )
    tx.execute(
        f"INSERT INTO portal_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.subject,
            slugs,
            to_micros(record.expires_at),
            to_micros(record.created_at),
            None if record.invalidated_at is None else to_micros(record.invalidated_at),
        ),
    )


def get(tx: Tx, token_id: str) -> PortalTokenRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM portal_tokens WHERE id = ?", (token_id,))
    return None if row is None else _from_row(row)


def list_newest(tx: Tx, limit: int) -> list[PortalTokenRecord]:
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM portal_tokens ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
    )
    return [_from_row(r) for r in rows]


def invalidate(tx: Tx, at: datetime, *, token_id: str | None, subject: str | None) -> int:
    """Mark matching live tokens invalidated; both filters None means every token."""
    where = ["invalidated_at IS NULL"]
    params: list[object] = [to_micros(at)]
    if token_id is not None:
        where.append("id = ?")
        params.append(token_id)
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    return tx.rowcount(
        f"UPDATE portal_tokens SET invalidated_at = ? WHERE {' AND '.join(where)}", params
    )


def read_secret(tx: Tx) -> str | None:
    row = tx.one("SELECT value FROM server_settings WHERE key = ?", (SECRET_SETTING,))
    return None if row is None else str(row[0])


def store_secret_once(tx: Tx, candidate: str) -> str:
    """Store ``candidate`` unless a secret exists; return the one that is stored (race-safe)."""
    tx.execute(
        "INSERT INTO server_settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (SECRET_SETTING, candidate),
    )
    stored = read_secret(tx)
    return candidate if stored is None else stored
