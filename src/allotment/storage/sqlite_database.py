"""The embedded engine: SQLite in WAL mode, one connection per thread, one writer at a time,
with the exact-decimal SQL functions of :mod:`allotment.storage.decimal_sql` registered on
every connection, and SQLite's errors mapped to :class:`DuplicateKey` and
:class:`~allotment.domain.errors.Unavailable`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

from allotment.domain.errors import Unavailable
from allotment.storage import decimal_sql
from allotment.storage.seam import Database, DuplicateKey, Row, Tx

log = logging.getLogger("allotment.storage")

sqlite3.register_adapter(Decimal, str)


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
        self._shared_lock: AbstractContextManager[Any] = nullcontext()
        """Taken inside ``_write_lock`` by every write (:meth:`share_writes`; none by default)."""
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

    def share_writes(self, lock: Any) -> None:
        """Serialise this database's writers with other processes' through ``lock`` (an
        acquire/release lock they share: ``import_jobs``' workers), taken after the process
        lock, so a writer waiting for another process's wakes when it commits instead of
        sleeping in SQLite's busy handler (1, 2, 5, … 100 ms steps: two import workers spent
        most of their time there)."""
        self._shared_lock = lock

    @contextmanager
    def write(self) -> Iterator[Tx]:
        conn = self._conn()
        with self._write_lock, self._shared_lock:
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
