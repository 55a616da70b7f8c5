"""Freshness marks for the value-check cache (migration 0450; docs/api/entitlements.md).

Three version counters, each bumped inside the transaction of the write it announces:

* ``usage_marks(meter_id, subject)``: every ingest transaction that folds events into a
  (meter, subject)'s rollups bumps ``version`` and records, in the ring slot
  ``m{version % RING}``, the earliest minute it touched. The upsert holds the row until
  commit, so versions are commit-ordered per (meter, subject) on PostgreSQL too (a global
  sequence or ``max(seq)`` would not be: a smaller number may commit later).
* ``value_versions(subject_key, feature_key)``: every write to that owner's entitlements
  for that feature key (create, override, delete, reset, grant create and void); the
  ``subject_key`` column holds the owner's scope (``Owner.scope``: a subject key, or
  ``customer:<id>``). A customer's scopes are also bumped when its subjects change.
* ``value_catalog``: one row, every feature and meter write (meter writes rebuild rollups).

Readers read the counters *before* the data they cache, so what they cache includes at least
everything the counters announce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from allotment.domain.owners import Owner
from allotment.domain.value_cache import RING
from allotment.storage import entitlements_repo
from allotment.storage.database import Database, Tx
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.postgres_database import PostgresDatabase
from allotment.storage.sqlite_database import SqliteDatabase, _sqlite_exec

_CHUNK = 200
_SLOTS = ", ".join(f"m{i}" for i in range(RING))
_ROW = "(?, ?, 1, " + ", ".join("?" if i == 1 else "NULL" for i in range(RING)) + ")"
_UPSERT_HEAD = f"INSERT INTO usage_marks (meter_id, subject, version, {_SLOTS}) VALUES "
_UNNEST_SELECT = (
    "SELECT m, s, 1, "
    + ", ".join("x" if i == 1 else "NULL::bigint" for i in range(RING))
    + " FROM unnest(?::text[], ?::text[], ?::bigint[]) AS r(m, s, x)"
)
_UPSERT_TAIL = (
    " ON CONFLICT (meter_id, subject) DO UPDATE SET version = usage_marks.version + 1, "
    + ", ".join(
        f"m{i} = CASE WHEN (usage_marks.version + 1) % {RING} = {i} "
        f"THEN excluded.m1 ELSE usage_marks.m{i} END"
        for i in range(RING)
    )
)

# ---------------------------------------------------------------- writers


def bump_touched(tx: Tx, touched: Mapping[tuple[str, str], int]) -> None:
    """Bump each (meter, subject) and record the earliest minute (epoch µs) touched, in key
    order (so concurrent writers lock rows in the same order)."""
    rows = sorted(touched.items())
    if tx.dialect == "postgresql" and rows:  # one statement of arrays
        tx.execute(
            _UPSERT_HEAD.replace(" VALUES ", " ") + _UNNEST_SELECT + _UPSERT_TAIL,
            [[m for (m, _s), _x in rows], [s for (_m, s), _x in rows], [x for _k, x in rows]],
        )
        return
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        tx.execute(
            _UPSERT_HEAD + ",".join([_ROW] * len(chunk)) + _UPSERT_TAIL,
            [v for (meter_id, subject), minute in chunk for v in (meter_id, subject, minute)],
        )


def bump_scope(tx: Tx, subject_key: str, feature_key: str) -> None:
    """A subject's entitlements for a feature key (or their grants or resets) changed."""
    tx.execute(
        "INSERT INTO value_versions (subject_key, feature_key, version) VALUES (?, ?, 1) "
        "ON CONFLICT (subject_key, feature_key) DO UPDATE "
        "SET version = value_versions.version + 1",
        (subject_key, feature_key),
    )


def bump_catalog(tx: Tx) -> None:
    """A feature or a meter changed (meter writes also rebuild rollups)."""
    tx.execute("UPDATE value_catalog SET version = version + 1 WHERE id = 1")


# ---------------------------------------------------------------- readers

_CATALOG = "(SELECT version FROM value_catalog WHERE id = 1)"
_SCOPE = "(SELECT version FROM value_versions WHERE subject_key = ? AND feature_key = ?)"
_MARK = "(SELECT version FROM usage_marks WHERE meter_id = ? AND subject = ?)"
_SUBJECT = "(SELECT key FROM subjects WHERE id = ? AND deleted_at IS NULL)"
_VERSIONS = {
    (meter, subject): "SELECT "
    + ", ".join([_CATALOG, _SCOPE, *([_MARK] if meter else []), *([_SUBJECT] if subject else [])])
    for meter in (False, True)
    for subject in (False, True)
}


Versions = tuple[int, int, int, str | None]


def _marks_sum_sql(n: int) -> str:
    """The summed usage marks of ``n`` (>= 1) subjects (a customer's), as the mark column."""
    return (
        "(SELECT COALESCE(SUM(version), 0) FROM usage_marks WHERE meter_id = ? AND subject IN ("
        + ", ".join("?" for _ in range(n))
        + "))"
    )


def _versions_sql(
    scope: str,
    feature_key: str,
    meter_id: str | None,
    subject_id: str | None,
    subjects: Sequence[str] | None = None,
) -> tuple[str, list[str]]:
    """``subjects`` None: the mark is ``scope``'s (a subject owner); otherwise the sum of
    these subjects' marks."""
    params: list[str] = [scope, feature_key]
    if meter_id is None or subjects is None or len(subjects) == 1:
        if meter_id is not None:
            params += [meter_id, scope if subjects is None else subjects[0]]
        if subject_id is not None:
            params.append(subject_id)
        return _VERSIONS[meter_id is not None, subject_id is not None], params
    parts = [_CATALOG, _SCOPE]
    if subjects:
        parts.append(_marks_sum_sql(len(subjects)))
        params += [meter_id, *subjects]
    else:
        parts.append("0")
    if subject_id is not None:
        parts.append(_SUBJECT)
        params.append(subject_id)
    return "SELECT " + ", ".join(parts), params


def versions(
    tx: Tx,
    subject_key: str,
    feature_key: str,
    meter_id: str | None = None,
    subject_id: str | None = None,
    subjects: Sequence[str] | None = None,
) -> Versions:
    """One statement: (catalog, scope, usage mark of (meter_id, subject_key) — or the summed
    marks of ``subjects`` —, key of the live subject with id ``subject_id``). Missing rows
    read as 0 (None for the subject key). ``subject_key`` is the owner's scope."""
    sql, params = _versions_sql(subject_key, feature_key, meter_id, subject_id, subjects)
    return _parse(tx.execute(sql, params)[0], meter_id, subject_id)


def current_versions(
    db: Database,
    subject_key: str,
    feature_key: str,
    meter_id: str | None = None,
    subject_id: str | None = None,
    subjects: Sequence[str] | None = None,
) -> Versions:
    """:func:`versions` as a statement of its own. On SQLite it runs on this thread's
    connection without ``BEGIN``/``COMMIT`` (one statement is its own consistent snapshot;
    inside an open transaction it reads that transaction's snapshot), which halves the cost of
    the value check's only read. On PostgreSQL it is one round trip, as every read statement
    is there (a pooled connection in autocommit)."""
    sql, params = _versions_sql(subject_key, feature_key, meter_id, subject_id, subjects)
    return _parse(read_one(db, sql, params), meter_id, subject_id)


def owner_versions_many(
    db: Database, items: Sequence[tuple[str, str, str, Sequence[str]]]
) -> tuple[Any, ...]:
    """:func:`current_versions` of several (scope, feature key, meter id, subjects) at once,
    in ONE statement (each item's catalog, scope and summed-marks columns, flattened in item
    order): what a caller checking several of one owner's entitlements pays once."""
    parts: list[str] = []
    params: list[Any] = []
    for i, (scope, feature_key, meter_id, subjects) in enumerate(items):
        sql, p = _versions_sql(scope, feature_key, meter_id, None, tuple(subjects))
        parts.append(f"({sql}) AS v{i}")
        params += p
    return tuple(read_one(db, "SELECT * FROM " + " CROSS JOIN ".join(parts), params))


def read_one(db: Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first row of one read statement run on its own (see :func:`current_versions`):
    no ``BEGIN``/``COMMIT`` on SQLite, one round trip on PostgreSQL (whose reads run each
    statement in autocommit). The statement must return a row."""
    if isinstance(db, SqliteDatabase):
        return _sqlite_exec(db._conn(), sql, params).fetchone()
    if isinstance(db, PostgresDatabase):
        return db.read_first(sql, params)
    with db.read() as tx:
        return tx.execute(sql, params)[0]


def read_rows(db: Database, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Every row of one read statement run on its own, as :func:`read_one` runs it."""
    if isinstance(db, SqliteDatabase):
        return list(_sqlite_exec(db._conn(), sql, params).fetchall())
    with db.read() as tx:
        return list(tx.execute(sql, params))


def _parse(row: Sequence[Any], meter_id: str | None, subject_id: str | None) -> Versions:
    mark = row[2] if meter_id is not None else None
    found = row[-1] if subject_id is not None else None
    return int(row[0] or 0), int(row[1] or 0), int(mark or 0), found


def mark(tx: Tx, meter_id: str, subject: str) -> tuple[int, tuple[int | None, ...]]:
    """(version, ring slots) of one (meter, subject); (0, all None) when it has no usage."""
    row = tx.one(
        f"SELECT version, {_SLOTS} FROM usage_marks WHERE meter_id = ? AND subject = ?",
        (meter_id, subject),
    )
    if row is None:
        return 0, (None,) * RING
    return int(row[0]), tuple(None if v is None else int(v) for v in row[1:])


def entitlements_of(tx: Tx, owner: Owner, feature_key: str) -> list[EntitlementRecord]:
    """Every entitlement (deleted ones too) of an owner for a feature key."""
    rows: Sequence[tuple[object, ...]] = tx.execute(
        f"SELECT {entitlements_repo._COLUMNS} FROM entitlements "
        "WHERE subject_key = ? AND customer_id = ? AND feature_key = ?",
        (owner.subject_key, owner.customer_id, feature_key),
    )
    return [entitlements_repo._record(r) for r in rows]


# ---------------------------------------------------------------- sweeps (notifications)


def usage_versions(tx: Tx, meter_ids: frozenset[str] | None) -> dict[tuple[str, str], int]:
    """The usage mark version of every (meter, subject) (of these meters; None: all)."""
    if meter_ids is not None and not meter_ids:
        return {}
    if meter_ids is None:
        rows = tx.execute("SELECT meter_id, subject, version FROM usage_marks")
    else:
        ids = sorted(meter_ids)
        marks = ", ".join("?" for _ in ids)
        rows = tx.execute(
            f"SELECT meter_id, subject, version FROM usage_marks WHERE meter_id IN ({marks})", ids
        )
    return {(r[0], r[1]): int(r[2]) for r in rows}


def scope_versions(tx: Tx) -> dict[tuple[str, str], int]:
    """The definition version of every (subject key, feature key) scope."""
    rows = tx.execute("SELECT subject_key, feature_key, version FROM value_versions")
    return {(r[0], r[1]): int(r[2]) for r in rows}
