"""Customers and their subject mappings (migration 0500): SQL in, domain customers out.

A live customer's subject keys are its live ``customer_subjects`` rows; a deleted customer's
are the rows released with it (``with_customer = 1``), so it still reads as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from allotment.domain.customers import Customer, CustomerInput
from allotment.domain.customers import attributed_subjects as _attributed
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Row, Tx

_COLUMNS = (
    "id, key, name, primary_email, currency, billing_address, description, metadata, "
    "created_at, updated_at, deleted_at"
)
ORDER_COLUMNS = {"id": "id", "name": "name", "createdAt": "created_at"}


@dataclass(frozen=True, slots=True)
class CustomerFilter:
    """Case-insensitive substring filters of the list (None: any)."""

    key: str | None = None
    name: str | None = None
    primary_email: str | None = None
    subject: str | None = None
    ids: Sequence[str] | None = None
    """Only these customers (e.g. those on a plan); [] matches none."""
    include_deleted: bool = False


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if not value else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if not text else json.loads(text)


def _customer(row: Row, subjects: Sequence[str]) -> Customer:
    return Customer(
        id=row[0], key=row[1], name=row[2], primary_email=row[3], currency=row[4],
        billing_address=_load(row[5]), description=row[6], metadata=_load(row[7]),
        subject_keys=tuple(subjects), created_at=from_micros(int(row[8])),
        updated_at=from_micros(int(row[9])),
        deleted_at=None if row[10] is None else from_micros(int(row[10])),
    )  # fmt: skip


def _subjects_of(tx: Tx, rows: Sequence[Row]) -> dict[str, list[str]]:
    """Subject keys per customer id, in position order (live, or released with a deleted
    customer)."""
    out: dict[str, list[str]] = {r[0]: [] for r in rows}
    if not rows:
        return out
    marks = ", ".join("?" for _ in rows)
    found = tx.execute(
        "SELECT customer_id, subject_key FROM customer_subjects "
        f"WHERE customer_id IN ({marks}) AND (deleted_at IS NULL OR with_customer = 1) "
        "ORDER BY customer_id, position",
        [r[0] for r in rows],
    )
    for customer_id, subject_key in found:
        out[customer_id].append(subject_key)
    return out


def _many(tx: Tx, rows: Sequence[Row]) -> list[Customer]:
    subjects = _subjects_of(tx, rows)
    return [_customer(r, subjects[r[0]]) for r in rows]


def _one(tx: Tx, row: Row | None) -> Customer | None:
    return None if row is None else _many(tx, [row])[0]


_PG_SUBJECTS = (
    "(SELECT json_agg(s.subject_key ORDER BY s.position) FROM customer_subjects s"
    " WHERE s.customer_id = customers.id AND (s.deleted_at IS NULL OR s.with_customer = 1))"
)


def _single(tx: Tx, where: str, params: Sequence[Any]) -> Customer | None:
    """The customer ``where`` finds (at most one row) with its subject keys (as
    :func:`_subjects_of` reads them): on PostgreSQL in the same statement, one round trip; on
    SQLite two local reads."""
    if tx.dialect != "postgresql":
        return _one(tx, tx.one(f"SELECT {_COLUMNS} FROM customers {where}", params))
    row = tx.one(f"SELECT {_COLUMNS}, {_PG_SUBJECTS} FROM customers {where}", params)
    return None if row is None else _customer(row[:11], row[11] or ())


# ---------------------------------------------------------------- reads


def by_id(tx: Tx, customer_id: str) -> Customer | None:
    return _single(tx, "WHERE id = ?", (customer_id,))


def live_by_key(tx: Tx, key: str) -> Customer | None:
    return _single(tx, "WHERE key = ? AND deleted_at IS NULL", (key,))


def live_by_id(tx: Tx, customer_id: str) -> Customer | None:
    return _single(tx, "WHERE id = ? AND deleted_at IS NULL", (customer_id,))


def by_id_or_key(tx: Tx, id_or_key: str) -> Customer | None:
    """OpenMeter's resolution: ``id = x OR (key = x AND live)``, lowest id first (so a deleted
    customer is still found by its id, never by its key)."""
    return _single(
        tx,
        "WHERE id = ? OR (key = ? AND deleted_at IS NULL) ORDER BY id LIMIT 1",
        (id_or_key, id_or_key),
    )


def keys_of(tx: Tx, ids: Sequence[str]) -> dict[str, str | None]:
    """Customer id → key, for those of ``ids`` that exist (deleted ones too)."""
    out: dict[str, str | None] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in tx.execute(f"SELECT id, key FROM customers WHERE id IN ({marks})", chunk):
            out[str(row[0])] = None if row[1] is None else str(row[1])
    return out


def subject_owners(tx: Tx, subject_keys: Sequence[str]) -> dict[str, str]:
    """Subject key → id of the live customer it is mapped to (for the given keys)."""
    if not subject_keys:
        return {}
    marks = ", ".join("?" for _ in subject_keys)
    rows = tx.execute(
        "SELECT subject_key, customer_id FROM customer_subjects "
        f"WHERE deleted_at IS NULL AND subject_key IN ({marks})",
        list(subject_keys),
    )
    return {str(r[0]): str(r[1]) for r in rows}


def usage_owners(tx: Tx, subjects: Sequence[str]) -> dict[str, str]:
    """Event subject → id of the live customer whose usage it is, for those of ``subjects``
    that belong to one: the customer with that key, else the one with that subject key (the
    key precedence of ``domain.customers.attributed_subjects``)."""
    out: dict[str, str] = {}
    keys = sorted(set(subjects))
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row in tx.execute(
            f"SELECT cs.subject_key, cs.customer_id FROM customer_subjects cs "
            f"JOIN customers c ON c.id = cs.customer_id AND c.deleted_at IS NULL "
            f"WHERE cs.deleted_at IS NULL AND cs.subject_key IN ({marks})",
            chunk,
        ):
            out[str(row[0])] = str(row[1])
        for row in tx.execute(
            f"SELECT key, id FROM customers WHERE deleted_at IS NULL AND key IN ({marks})", chunk
        ):
            out[str(row[0])] = str(row[1])  # a customer's key wins over a subject key
    return out


def live_keys_among(tx: Tx, values: Sequence[str], exclude_id: str) -> set[str]:
    """Which of ``values`` are the key of a live customer other than ``exclude_id``."""
    if not values:
        return set()
    marks = ", ".join("?" for _ in values)
    rows = tx.execute(
        f"SELECT key FROM customers WHERE deleted_at IS NULL AND id <> ? AND key IN ({marks})",
        [exclude_id, *values],
    )
    return {str(r[0]) for r in rows}


def attributed_subjects(tx: Tx, customer: Customer) -> tuple[str, ...]:
    """The event subjects whose usage is the customer's now (its key and subject keys, less
    those that are another live customer's key); () once it is deleted."""
    if customer.is_deleted:
        return ()
    return _attributed(customer, live_keys_among(tx, customer.subject_keys, customer.id))


def list_customers(
    tx: Tx, f: CustomerFilter, *, order_by: str, descending: bool, limit: int, offset: int
) -> tuple[list[Customer], int]:
    where: list[str] = []
    params: list[Any] = []
    if not f.include_deleted:
        where.append("deleted_at IS NULL")
    for column, value in (("key", f.key), ("name", f.name), ("primary_email", f.primary_email)):
        if value is not None:
            # case-insensitive substring test without LIKE wildcards, same on both engines
            where.append(
                f"{column} IS NOT NULL AND replace(lower({column}), ?, '') <> lower({column})"
            )
            params.append(value.lower())
    if f.subject is not None:
        where.append(
            "EXISTS (SELECT 1 FROM customer_subjects s WHERE s.customer_id = customers.id "
            "AND (s.deleted_at IS NULL OR s.with_customer = 1) "
            "AND replace(lower(s.subject_key), ?, '') <> lower(s.subject_key))"
        )
        params.append(f.subject.lower())
    if f.ids is not None:
        if not f.ids:
            return [], 0
        where.append(f"id IN ({', '.join('?' for _ in f.ids)})")
        params.extend(f.ids)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total_row = tx.one(f"SELECT COUNT(*) FROM customers{clause}", params)
    total = int(total_row[0]) if total_row else 0
    direction = "DESC" if descending else "ASC"
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM customers{clause} "
        f"ORDER BY {ORDER_COLUMNS[order_by]} {direction}, id {direction} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return _many(tx, rows), total


# ---------------------------------------------------------------- writes


def _insert_subjects(
    tx: Tx, customer_id: str, keys: Sequence[str], start: int, at: datetime
) -> None:
    """Raises DuplicateKey when a subject key is live on another customer."""
    tx.execute_many(
        "INSERT INTO customer_subjects (customer_id, subject_key, position, created_at) "
        "VALUES (?, ?, ?, ?)",
        [(customer_id, k, start + i, to_micros(at)) for i, k in enumerate(keys)],
    )


def insert(tx: Tx, c: Customer) -> None:
    """Raises DuplicateKey when the key or a subject key is live elsewhere."""
    tx.execute(
        f"INSERT INTO customers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            c.id, c.key, c.name, c.primary_email, c.currency, _json(c.billing_address),
            c.description, _json(c.metadata), to_micros(c.created_at), to_micros(c.updated_at),
            None,
        ),
    )  # fmt: skip
    _insert_subjects(tx, c.id, c.subject_keys, 0, c.created_at)


def replace(tx: Tx, old: Customer, inp: CustomerInput, at: datetime) -> Customer:
    """Every field from ``inp``; subject mappings diffed (removed ones released, added ones
    appended). Raises DuplicateKey like :func:`insert`."""
    at_us = to_micros(at)
    tx.execute(
        "UPDATE customers SET key = ?, name = ?, primary_email = ?, currency = ?, "
        "billing_address = ?, description = ?, metadata = ?, updated_at = ? WHERE id = ?",
        (
            inp.key, inp.name, inp.primary_email, inp.currency, _json(inp.billing_address),
            inp.description, _json(inp.metadata), at_us, old.id,
        ),
    )  # fmt: skip
    removed = [s for s in old.subject_keys if s not in inp.subject_keys]
    added = [s for s in inp.subject_keys if s not in old.subject_keys]
    if removed:
        marks = ", ".join("?" for _ in removed)
        tx.execute(
            "UPDATE customer_subjects SET deleted_at = ? WHERE customer_id = ? "
            f"AND deleted_at IS NULL AND subject_key IN ({marks})",
            [at_us, old.id, *removed],
        )
    if added:
        row = tx.one("SELECT MAX(position) FROM customer_subjects WHERE customer_id = ?", (old.id,))
        start = 0 if row is None or row[0] is None else int(row[0]) + 1
        _insert_subjects(tx, old.id, added, start, at)
    found = by_id(tx, old.id)
    assert found is not None
    return found


def soft_delete(tx: Tx, customer_id: str, at: datetime) -> bool:
    at_us = to_micros(at)
    changed = tx.rowcount(
        "UPDATE customers SET deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
        (at_us, at_us, customer_id),
    )
    if changed:
        tx.execute(
            "UPDATE customer_subjects SET deleted_at = ?, with_customer = 1 "
            "WHERE customer_id = ? AND deleted_at IS NULL",
            (at_us, customer_id),
        )
    return changed > 0
