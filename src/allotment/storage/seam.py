"""The interface both database engines implement, and the helpers every repository uses.

Repositories and services import these names from :mod:`allotment.storage.database` (which
re-exports them beside :func:`~allotment.storage.database.open_database`); they live here so
that the engines (``sqlite_database``, ``postgres_database``) can implement them without
importing the module that picks between them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Row = tuple[Any, ...]


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

    dialect: str = ""
    """``sqlite`` or ``postgresql`` (the :class:`Database`'s)."""

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

    def copy_in(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """PostgreSQL only: append ``rows`` to ``table`` with one binary ``COPY … FROM STDIN``
        (``types`` = the PostgreSQL type of each column). A unique index that refuses a row
        fails the whole statement with :class:`DuplicateKey`; the transaction is then in error
        until the caller rolls back to a savepoint it took before."""
        raise NotImplementedError(f"COPY is not available on {self.dialect}")


class Pending:
    """The rows of a statement :meth:`PipelinedTx.send` queued: there once the pipeline has
    synced (:meth:`rows` syncs first when it has not)."""

    __slots__ = ("_fetch", "_rows")

    def __init__(self, fetch: Callable[[], list[Row]]) -> None:
        self._fetch = fetch
        self._rows: list[Row] | None = None

    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = self._fetch()
        return self._rows


class PipelinedTx(Tx):
    """A write transaction whose statements may travel together (``Database.pipelined_write``).

    :meth:`send` queues a statement without waiting; :meth:`sync` sends everything queued and
    waits once (a statement's error is raised there); ``execute``/``rowcount`` wait at once and
    ``execute_many`` queues. The transaction's ``COMMIT`` goes with what is queued last, in
    the same round trip. On an engine without pipelines every statement simply runs at once.
    """

    @abstractmethod
    def send(self, sql: str, params: Sequence[Any] = ()) -> Pending:
        """Queue one statement; its rows once synced."""

    @abstractmethod
    def sync(self) -> None:
        """Send what is queued and wait for it (one round trip on PostgreSQL)."""


class _PlainPipelinedTx(PipelinedTx):
    """:class:`PipelinedTx` over a plain transaction: every statement runs when sent."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self.dialect = tx.dialect

    def send(self, sql: str, params: Sequence[Any] = ()) -> Pending:
        rows = self._tx.execute(sql, params)
        return Pending(lambda: rows)

    def sync(self) -> None:
        pass

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._tx.execute(sql, params)

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._tx.execute_many(sql, rows)

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._tx.rowcount(sql, params)


@dataclass(frozen=True)
class PoolSettings:
    """PostgreSQL connection settings (SQLite keeps one connection per thread).

    Config file ``database.pool.{minSize,maxSize,timeout,connectTimeout,statementTimeout}``,
    environment ``ALLOTMENT_DB_POOL_{MIN_SIZE,MAX_SIZE,TIMEOUT,CONNECT_TIMEOUT,STATEMENT_TIMEOUT}``.
    Every wait on the database is bounded by one of these (see docs/operations.md):

    * ``timeout_seconds``: longest a request waits for a pooled connection. While the database
      is known to be unreachable a request waits at most ``min(timeout, 1 s)``, then answers 503.
    * ``connect_timeout_seconds``: longest a new connection attempt may take (libpq
      ``connect_timeout``; libpq rounds values below 2 up to 2).
    * ``statement_timeout_ms``: server-side bound on one statement, lock waits included.
    """

    min_size: int = 2
    max_size: int = 10
    timeout_seconds: float = 5.0
    statement_timeout_ms: int = 30_000
    connect_timeout_seconds: float = 5.0
    reconnect_window_seconds: float = 10.0
    """How long the pool keeps retrying one lost connection (1 s, 2 s, 4 s … apart) before it
    gives up and lets the next request start a fresh attempt; keeps recovery after an outage
    within a few seconds."""


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

    @contextmanager
    def pipelined_write(self) -> Iterator[PipelinedTx]:
        """:meth:`write` whose statements may travel together (:class:`PipelinedTx`): on
        PostgreSQL ``BEGIN`` goes with the first batch and ``COMMIT`` with the last, so a
        transaction of two batches costs two round trips; elsewhere a plain transaction."""
        with self.write() as tx:
            yield _PlainPipelinedTx(tx)

    @abstractmethod
    def close(self) -> None: ...

    def ping(self) -> None:
        with self.read() as tx:
            tx.execute("SELECT 1")


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
