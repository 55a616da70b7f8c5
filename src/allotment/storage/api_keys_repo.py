"""API keys table: SQL in, :class:`~allotment.domain.api_keys.ApiKey` out (never the secret)."""

from __future__ import annotations

from datetime import datetime

from allotment.domain.api_keys import ApiKey, Scope
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx

_COLUMNS = "id, name, scope, prefix, created_at, last_used_at, revoked_at"


def _key(row: Row) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        scope=Scope(row[2]),
        prefix=row[3],
        created_at=from_micros(int(row[4])),
        last_used_at=None if row[5] is None else from_micros(int(row[5])),
        revoked_at=None if row[6] is None else from_micros(int(row[6])),
    )


def insert(tx: Tx, key: ApiKey, secret_hash: str) -> None:
    tx.execute(
        "INSERT INTO api_keys (id, name, scope, prefix, secret_hash, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (key.id, key.name, key.scope.value, key.prefix, secret_hash, to_micros(key.created_at)),
    )


def by_hash(tx: Tx, secret_hash: str) -> tuple[ApiKey, str] | None:
    """The key whose secret has this digest, revoked or not, with the stored digest."""
    row = tx.one(
        f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE secret_hash = ?", (secret_hash,)
    )
    return None if row is None else (_key(row), str(row[7]))


def by_id(tx: Tx, key_id: str) -> ApiKey | None:
    """The key with this id, revoked or not."""
    row = tx.one(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
    return None if row is None else _key(row)


def live_by_name(tx: Tx, name: str) -> ApiKey | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,))
    return None if row is None else _key(row)


def list_all(tx: Tx, limit: int, after_id: str | None) -> list[ApiKey]:
    """Oldest first (ids are ULIDs), from after ``after_id``; revoked keys included."""
    if after_id is None:
        rows = tx.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id LIMIT ?", (limit,))
    else:
        rows = tx.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
    return [_key(r) for r in rows]


def revoke(tx: Tx, key_id: str, at: datetime) -> bool:
    return (
        tx.rowcount(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (to_micros(at), key_id),
        )
        == 1
    )


def touch(tx: Tx, key_id: str, at: datetime) -> None:
    tx.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (to_micros(at), key_id))


def any_key(tx: Tx) -> bool:
    """Whether any key was ever issued (a revoked one counts: auth stays on)."""
    return tx.one("SELECT 1 FROM api_keys LIMIT 1") is not None
