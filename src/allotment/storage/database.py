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

import contextlib
import functools
import logging
import re
import sqlite3
import threading
import time
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

log = logging.getLogger("allotment.storage")

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

    @abstractmethod
    def close(self) -> None: ...

    def ping(self) -> None:
        with self.read() as tx:
            tx.execute("SELECT 1")


# ---------------------------------------------------------------- SQLite


# SQLite result codes (primary, low byte) that mean "the database cannot serve right now"
# rather than "this SQL is wrong": busy/locked beyond the busy timeout, I/O error, disk full,
# cannot open the file, read-only file system, out of memory, WAL protocol error.
_SQLITE_TRANSIENT = {
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
}


def sqlite_error(exc: sqlite3.Error) -> Exception:
    """Translate a sqlite3 error: a unique-key clash, an outage (503), or the error itself (500).

    Constraint violations become :class:`DuplicateKey`; busy/locked/I-O/full/cannot-open become
    :class:`Unavailable` (the request is answered 503 with ``Retry-After``). Anything else —
    SQL errors, a corrupt file — is a bug or a broken installation and stays a 500.
    """
    if isinstance(exc, sqlite3.IntegrityError):
        return DuplicateKey(str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in _SQLITE_TRANSIENT:
        return Unavailable(f"database unavailable: {_SQLITE_TRANSIENT[code & 0xFF]} ({exc})")
    if code is None and isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if (
            "locked" in text
            or "disk i/o" in text
            or "disk is full" in text
            or "unable to open" in text
        ):
            return Unavailable(f"database unavailable: {exc}")
    return exc


def _sqlite_exec(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    try:
        return conn.execute(sql, params)
    except sqlite3.Error as exc:
        mapped = sqlite_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc


class _SqliteTx(Tx):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = _sqlite_exec(self._conn, sql, params)
        try:
            return cur.fetchall()
        except sqlite3.Error as exc:
            mapped = sqlite_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            mapped = sqlite_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _sqlite_exec(self._conn, sql, params).rowcount


SQLITE_WAL_AUTOCHECKPOINT_PAGES = 16_384
"""Checkpoint the WAL into the database file once it holds this many pages (64 MiB of 4 KiB
pages; SQLite's default is 1 000). An ingest commit dirties pages all over the rollup and dedup
indexes; a larger WAL lets a page rewritten by many commits be checkpointed once: 10–35 % less
writer time per event measured in process (docs/api/events.md). The WAL file is
reset, not grown, after each checkpoint that no reader blocks."""


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
            except sqlite3.Error as exc:
                raise Unavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
            try:
                _sqlite_exec(conn, "PRAGMA busy_timeout=30000")
                _sqlite_exec(conn, "PRAGMA journal_mode=WAL")
                _sqlite_exec(conn, f"PRAGMA synchronous={self._synchronous}")
                _sqlite_exec(conn, "PRAGMA temp_store=MEMORY")
                _sqlite_exec(conn, "PRAGMA cache_size=-65536")
                _sqlite_exec(conn, f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
            except BaseException:
                conn.close()
                raise
            decimal_sql.register(conn)
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back by itself (I/O error, disk full): never let a
        # failing ROLLBACK hide the original error.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.warning("SQLite rollback failed: %s", exc)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        conn = self._conn()
        with self._write_lock:
            _sqlite_exec(conn, "BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
                _sqlite_exec(conn, "COMMIT")
            except BaseException:
                self._rollback(conn)
                raise

    @contextmanager
    def read(self) -> Iterator[Tx]:
        conn = self._conn()
        _sqlite_exec(conn, "BEGIN")
        try:
            yield _SqliteTx(conn)
            _sqlite_exec(conn, "COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

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


def array_literal(values: list[Any]) -> str:
    """A list parameter as PostgreSQL's array input text (``{1,NULL,"a \\"b\\""}``), for a
    statement that casts it (``?::text[]``, ``?::bigint[]``, ``?::numeric[]``).

    psycopg's own list dumpers walk the list in Python and quote each text element with a
    regular expression: three quarters of the ingest writer's time on 1000-event batches,
    whose stored JSON is full of quotes. Here a list of one kind is joined and escaped by
    ``str`` methods in C. Elements are ``None`` (``NULL``), ``str`` (always quoted, so the text
    ``"NULL"`` stays text; backslash and double quote escaped) or ``int``/``Decimal`` (their
    ``str``, which PostgreSQL reads exactly, exponent included); a list of text mixed with
    numbers, or anything else (``bool``, ``float``…), is a ``TypeError``.
    """
    kinds = set(map(type, values))
    nulls = _NONE in kinds
    kinds.discard(_NONE)
    if not kinds:
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    if kinds == {str}:
        if not nulls:
            joined = "\x00".join(values)  # NUL: never inside text PostgreSQL accepts
            if joined.count("\x00") == len(values) - 1:
                escaped = joined.replace("\\", "\\\\").replace('"', '\\"')
                return '{"' + escaped.replace("\x00", '","') + '"}'
        return "{" + ",".join(["NULL" if v is None else _quoted(v) for v in values]) + "}"
    if kinds <= _NUMBERS:
        if not nulls:
            return "{" + ",".join(map(str, values)) + "}"
        return "{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}"
    names = ", ".join(sorted(k.__name__ for k in kinds))
    raise TypeError(f"array_literal: cannot encode a list of {names}")


_NONE = type(None)
_NUMBERS = frozenset({int, Decimal})


def _quoted(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=1024)
def to_postgres_sql(sql: str, *, with_params: bool = True) -> str:
    """Rewrite the shared SQL dialect for psycopg: ``?`` → ``%s`` and native aggregates.

    psycopg only interprets ``%`` when parameters are passed, so a statement run without any
    (a migration step, a constant query) keeps its ``%`` operators and literals as written.
    """
    out = sql.replace("%", "%%").replace("?", "%s") if with_params else sql
    for ours, native in _PG_AGGREGATES.items():
        out = out.replace(ours, native)
    return out


class _Health:
    """Whether the most recent connection attempt to PostgreSQL failed (thread-safe enough:
    one float written atomically)."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def up(self) -> None:
        if self.down_since is not None:
            log.warning("database reachable again after %.1f s", time.monotonic() - self.down_since)
        self.down_since = None

    def down(self, exc: BaseException) -> None:
        if self.down_since is None:
            first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            log.warning("database unreachable: %s", first_line)
            self.down_since = time.monotonic()


class PostgresDatabase(Database):
    """PostgreSQL through a psycopg connection pool; see :class:`PoolSettings`.

    Outage behaviour (tested in ``tests/ops/test_db_outage.py``):

    * every connection taken from the pool is probed first (one empty round trip); a broken one
      is closed and replaced in the background, and the next pooled connection is tried, so a
      database restart costs no request;
    * a failed connection attempt marks the database *down*: requests then wait at most
      ``min(timeout, 1 s)`` for a connection before answering 503, instead of queueing;
    * the pool retries lost connections 1 s, 2 s, 4 s … apart for ``reconnect_window_seconds``,
      and any request starts a fresh attempt after that, so recovery needs no restart;
    * a connection lost mid-transaction (or a statement timeout, deadlock or serialization
      failure) rolls the transaction back and surfaces as :class:`Unavailable` (503).
    """

    dialect = "postgresql"

    def __init__(self, url: str, pool: PoolSettings | None = None) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self.url = url
        self.settings = settings = pool or PoolSettings()
        health = self._health = _Health()

        class _TrackedConnection(psycopg.Connection):
            """Records whether connecting works, so requests fail fast while it does not."""

            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = super().connect(*args, **kwargs)
                except psycopg.OperationalError as exc:
                    health.down(exc)
                    raise
                health.up()
                return conn

        idle_tx_ms = max(settings.statement_timeout_ms * 2, 60_000)
        server_options = (
            f"-c statement_timeout={settings.statement_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={idle_tx_ms}"
        )
        self._pool = ConnectionPool(
            url,
            connection_class=_TrackedConnection,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout_seconds,
            reconnect_timeout=settings.reconnect_window_seconds,
            open=False,
            name="allotment",
            kwargs={
                "autocommit": False,
                "connect_timeout": max(2, round(settings.connect_timeout_seconds)),
                "options": server_options,
                # A peer that vanished without closing the socket (host down, network cut) is
                # noticed within about 11 s instead of minutes: TCP keepalive while waiting
                # (5 + 3 * 2 s) and a bound on unacknowledged data while sending (10 s).
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
                "tcp_user_timeout": 10_000,
                "application_name": "allotment",
            },
        )
        self._pool.open(wait=False)

    @property
    def is_down(self) -> bool:
        return self._health.down_since is not None

    def _unavailable(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"database unavailable: {exc.__class__.__name__}")

    def _acquire(self) -> Any:
        """A live pooled connection; broken idle ones are discarded without waiting."""
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        budget = self.settings.timeout_seconds
        if self.is_down:
            budget = min(budget, 1.0)
        deadline = time.monotonic() + budget
        for _ in range(self.settings.max_size + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn = self._pool.getconn(timeout=remaining)
            try:
                conn.execute("")  # one round trip; fails at once on a dead socket
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
            except psycopg.Error as exc:
                log.info("discarding broken pooled connection: %s", exc.__class__.__name__)
                with contextlib.suppress(Exception):
                    conn.close()
                self._pool.putconn(conn)  # closed: the pool replaces it in the background
                continue
            return conn
        raise PoolTimeout(f"no working database connection within {budget:.1f} s")

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        try:
            conn = self._acquire()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        try:
            with conn.transaction():
                yield _PostgresTx(conn, psycopg)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        finally:
            self._pool.putconn(conn)

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
    dialect = "postgresql"

    def __init__(self, conn: Any, psycopg: Any) -> None:
        self._conn = conn
        self._psycopg = psycopg

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            if not params:
                return self._conn.execute(to_postgres_sql(sql, with_params=False), prepare=None)
            params = [array_literal(p) if type(p) is list else p for p in params]
            return self._conn.execute(to_postgres_sql(sql), params, prepare=None)
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
