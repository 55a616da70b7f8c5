"""The database seam: one small interface, two engines (SQLite embedded, PostgreSQL at scale).

This is the module to import: it re-exports the interface (:class:`Database`, :class:`Tx`,
:data:`Row`, :class:`DuplicateKey`, :func:`dec`, :class:`PoolSettings`, defined in
``storage/seam.py``) and opens an engine by URL (:func:`open_database`): SQLite in
``storage/sqlite_database.py``, PostgreSQL in ``storage/postgres_database.py``.

Repositories write one SQL text for both engines, with ``?`` placeholders, ``ON CONFLICT``
upserts and the exact-decimal helpers of :mod:`allotment.storage.decimal_sql`. Conventions:

* instants are BIGINT microseconds since the Unix epoch (UTC);
* amounts are TEXT on SQLite and NUMERIC on PostgreSQL; bind :class:`~decimal.Decimal`, read
  back through :func:`dec`;
* flags are INTEGER 0/1 (bind ``int(flag)``), JSON documents are TEXT.

Writes go through :meth:`Database.write` (one transaction, committed on success, rolled back on
any exception); reads through :meth:`Database.read`. A lost database surfaces as
:class:`~allotment.domain.errors.Unavailable`, a unique-key clash as :class:`DuplicateKey`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlparse

from allotment.domain.errors import InvalidInput
from allotment.storage.postgres_database import PostgresDatabase
from allotment.storage.seam import (
    Database,
    DuplicateKey,
    Pending,
    PipelinedTx,
    PoolSettings,
    Row,
    Tx,
    dec,
    dec_or_none,
    split_statements,
)
from allotment.storage.sqlite_database import SqliteDatabase

__all__ = [
    "Database",
    "DuplicateKey",
    "Pending",
    "PipelinedTx",
    "PoolSettings",
    "Row",
    "Tx",
    "dec",
    "dec_or_none",
    "open_database",
    "split_statements",
]

_SQLITE_URL = re.compile(r"^sqlite:///(.+)$")


def open_database(
    url: str, *, pool: PoolSettings | None = None, sqlite_synchronous: str = "FULL"
) -> Database:
    """Open ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``postgresql://…``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, pool)
    match = _SQLITE_URL.match(url)
    if match:
        return SqliteDatabase(unquote(match.group(1)), synchronous=sqlite_synchronous)
    parsed = urlparse(url)
    raise InvalidInput(
        f"database URL scheme {parsed.scheme or url!r} is not supported; "
        "use sqlite:///path/to/file.db or postgresql://user:pass@host:port/db",
        field="db",
    )
