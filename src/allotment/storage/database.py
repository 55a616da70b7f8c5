"""The database seam: one small interface, two engines (SQLite embedded, PostgreSQL at scale).

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

import functools
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from allotment.domain.errors import InvalidInput, Unavailable
from allotment.storage import decimal_sql

Row = tuple[Any, ...]

sqlite3.register_adapter(Decimal, str)


class DuplicateKey(Exception):
    """A unique constraint rejected the write."""


def dec(value: Any) -> Decimal:
    """A stored amount as a Decimal (SQLite gives TEXT, PostgreSQL gives Decimal)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def dec_or_none(value: Any) -> Decimal | None:
    return None if value is None else dec(value)


class Tx(ABC):
    """One open transaction (or read snapshot)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; return all rows it produced (empty for writes)."""

    @abstractmethod
    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    @abstractmethod
    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement; return the number of rows it changed."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None


@dataclass(frozen=True)
class PoolSettings:
    """Connection-pool settings (PostgreSQL); SQLite keeps one connection per thread."""

    min_size: int = 2
    max_size: int = 10
    timeout_seconds: float = 5.0
    statement_timeout_ms: int = 30_000


class Database(ABC):
    dialect: str

    @abstractmethod
    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction, serialised against other writers where the engine needs it."""

    @abstractmethod
    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only, consistent view."""

    @abstractmethod
    def close(self) -> None: ...

    def ping(self) -> None:
        with self.read() as tx:
            tx.execute("SELECT 1")


# ---------------------------------------------------------------- SQLite


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc


class SqliteDatabase(Database):
    """Embedded SQLite in WAL mode: one connection per thread, one writer at a time.

    ``synchronous=FULL`` by default, so a committed write survives power loss, not only a
    crashed process. Writers are serialised by a process lock before ``BEGIN IMMEDIATE`` (no
    busy-wait sleeping inside SQLite); readers never block in WAL mode.
    """

    dialect = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30.0
                )
            except sqlite3.OperationalError as exc:
                raise Unavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-65536")
            decimal_sql.register(conn)
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[Tx]:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield _SqliteTx(conn)
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()


# ---------------------------------------------------------------- PostgreSQL

_PG_AGGREGATES = {"dec_sum(": "sum(", "dec_minagg(": "min(", "dec_maxagg(": "max("}


@functools.lru_cache(maxsize=1024)
def to_postgres_sql(sql: str) -> str:
    """Rewrite the shared SQL dialect for psycopg: ``?`` → ``%s`` and native aggregates."""
    out = sql.replace("%", "%%").replace("?", "%s")
    for ours, native in _PG_AGGREGATES.items():
        out = out.replace(ours, native)
    return out


class PostgresDatabase(Database):
    """PostgreSQL through a psycopg connection pool; see :class:`PoolSettings`."""

    dialect = "postgresql"

    def __init__(self, url: str, pool: PoolSettings | None = None) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self.url = url
        settings = pool or PoolSettings()
        self._pool = ConnectionPool(
            url,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout_seconds,
            open=False,
            kwargs={
                "autocommit": False,
                "connect_timeout": max(1, int(settings.timeout_seconds)),
                "options": f"-c statement_timeout={settings.statement_timeout_ms}",
            },
            check=ConnectionPool.check_connection,
        )
        self._pool.open(wait=False)

    def _unavailable(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"database unavailable: {exc.__class__.__name__}")

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _PostgresTx(conn, psycopg)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._transaction() as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self._transaction() as tx:
            yield tx

    def close(self) -> None:
        self._pool.close()


class _PostgresTx(Tx):
    def __init__(self, conn: Any, psycopg: Any) -> None:
        self._conn = conn
        self._psycopg = psycopg

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            return self._conn.execute(to_postgres_sql(sql), params or None, prepare=None)
        except self._psycopg.errors.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._run(sql, params)
        return cur.fetchall() if cur.description is not None else []

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(to_postgres_sql(sql), list(rows))
        except self._psycopg.errors.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._run(sql, params).rowcount)


# ---------------------------------------------------------------- helpers


def split_statements(script: str) -> list[str]:
    """Split a migration script on lines ending with ``;`` (comments stripped)."""
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


_SQLITE_URL = re.compile(r"^sqlite:///(.+)$")


def open_database(url: str, *, pool: PoolSettings | None = None, sqlite_synchronous: str = "FULL") -> Database:
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
