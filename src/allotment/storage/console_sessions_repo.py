"""Console sessions table: a session's digest → the admin key it stands for (docs/console.md)."""

from __future__ import annotations

from datetime import datetime

from allotment.domain.api_keys import ApiKey
from allotment.domain.timeutil import to_micros
from allotment.storage import api_keys_repo
from allotment.storage.database import Tx


def insert(tx: Tx, secret_hash: str, key_id: str, at: datetime, expires_at: datetime) -> None:
    tx.execute(
        "INSERT INTO console_sessions (secret_hash, key_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        (secret_hash, key_id, to_micros(at), to_micros(expires_at)),
    )


def live_key(tx: Tx, secret_hash: str, now: datetime) -> ApiKey | None:
    """The key of the unexpired session with this digest, revoked or not (the caller decides)."""
    row = tx.one(
        "SELECT key_id FROM console_sessions WHERE secret_hash = ? AND expires_at > ?",
        (secret_hash, to_micros(now)),
    )
    return None if row is None else api_keys_repo.by_id(tx, str(row[0]))


def delete(tx: Tx, secret_hash: str) -> None:
    tx.execute("DELETE FROM console_sessions WHERE secret_hash = ?", (secret_hash,))


def delete_expired(tx: Tx, now: datetime) -> int:
    return tx.rowcount("DELETE FROM console_sessions WHERE expires_at <= ?", (to_micros(now),))
