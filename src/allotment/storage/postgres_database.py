"""The engine at scale: PostgreSQL through a psycopg connection pool, with the shared SQL
dialect rewritten for psycopg (:func:`to_postgres_sql`), list parameters sent as array text
(:func:`array_literal`), and outages answered fast as
:class:`~allotment.domain.errors.Unavailable` (see :class:`PostgresDatabase`).

Round trips are what a request pays for on PostgreSQL (each one waits for the server process
to be scheduled, a millisecond or more on a loaded machine): a read costs exactly one per
statement, a write one per statement plus ``BEGIN`` and ``COMMIT`` (docs/benchmarks.md, "Round
trips"; ``tests/storage/test_pg_round_trips.py`` counts them), a pipelined write one per batch
of statements sent together (:meth:`PostgresDatabase.pipelined_write`: psycopg's pipeline
mode, ``BEGIN`` with the first batch and ``COMMIT`` with the last).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from allotment.domain.errors import Unavailable
from allotment.storage.seam import (
    Database,
    DuplicateKey,
    Pending,
    PipelinedTx,
    PoolSettings,
    Row,
    Tx,
)

log = logging.getLogger("allotment.storage")

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

    Pooled connections are in autocommit and read-only by default
    (``default_transaction_read_only``). :meth:`read` runs each statement on its own, as its
    own snapshot — what a ``READ COMMITTED`` transaction gave too, since there every statement
    takes a new snapshot — so a read costs no ``BEGIN``/``COMMIT``, and a write attempted in it
    fails (``ReadOnlySqlTransaction``) instead of committing statement by statement.
    :meth:`write` is one transaction, ``BEGIN READ WRITE`` … ``COMMIT``.

    Outage behaviour (tested in ``tests/ops/test_db_outage.py``):

    * every connection taken from the pool is checked first without a round trip: a server
      that ended the connection (a restart, ``pg_terminate_backend``, an idle timeout) has left
      its goodbye or the end of the stream on the socket, so a socket with something to read
      is probed (one empty statement); a broken one is closed and replaced in the background,
      and the next pooled connection is tried, so a database restart costs no request;
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
            " -c default_transaction_read_only=on"
        )
        self._pool = ConnectionPool(
            url,
            connection_class=_TrackedConnection,
            configure=_read_write_transactions,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout_seconds,
            reconnect_timeout=settings.reconnect_window_seconds,
            open=False,
            name="allotment",
            kwargs={
                "autocommit": True,
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
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                if _has_input(conn):
                    conn.execute("")  # one round trip; fails at once on a dead socket
            except psycopg.Error as exc:
                log.info("discarding broken pooled connection: %s", exc.__class__.__name__)
                with contextlib.suppress(Exception):
                    conn.close()
                self._pool.putconn(conn)  # closed: the pool replaces it in the background
                continue
            return conn
        raise PoolTimeout(f"no working database connection within {budget:.1f} s")

    def _checkout(self) -> Any:
        """:meth:`_acquire`, a database that cannot serve answered as :class:`Unavailable`."""
        from psycopg_pool import PoolTimeout

        try:
            return self._acquire()
        except (self._psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _connection(self, transaction: bool) -> Iterator[Tx]:
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        conn = self._checkout()
        try:
            if transaction:
                with conn.transaction():
                    yield _PostgresTx(conn, psycopg)
            else:
                yield _PostgresTx(conn, psycopg)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        finally:
            self._pool.putconn(conn)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._connection(True) as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """Each statement in autocommit, its own snapshot (see the class doc)."""
        with self._connection(False) as tx:
            yield tx

    @contextmanager
    def pipelined_write(self) -> Iterator[PipelinedTx]:
        """One ``BEGIN READ WRITE`` … ``COMMIT`` transaction in psycopg's pipeline mode: what
        is sent travels at the next :meth:`PipelinedTx.sync` (``BEGIN`` with the first
        batch), and ``COMMIT`` with what is queued when the block ends (the pipeline's closing
        ``Sync``): a transaction of two batches is two round trips. A block that raises sends
        ``ROLLBACK`` the same way; a failed statement is raised at the sync that carried it
        (then the transaction is rolled back)."""
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        conn = self._checkout()
        try:
            with conn.pipeline() as pipe:
                tx = _PipelinedPostgresTx(conn, psycopg, pipe)
                conn.execute("BEGIN READ WRITE", prepare=True)
                try:
                    yield tx
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK", prepare=True)  # with the closing Sync
                    raise
                conn.execute("COMMIT", prepare=True)
        except psycopg.errors.IntegrityError as exc:  # a queued write, raised at the sync
            raise DuplicateKey(str(exc)) from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        finally:
            idle = psycopg.pq.TransactionStatus.IDLE
            if not conn.closed and conn.info.transaction_status != idle:
                try:
                    conn.rollback()
                except psycopg.Error:
                    conn.close()  # the pool replaces it
            self._pool.putconn(conn)

    def read_first(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of one read statement (prepared at once), or None: :meth:`read`
        without its context managers, for the hot one-statement reads (the value check's
        version read, ingest's tail check)."""
        from psycopg_pool import PoolTimeout

        psycopg = self._psycopg
        conn = self._checkout()
        try:
            if not params:
                cur = conn.execute(to_postgres_sql(sql, with_params=False), prepare=True)
            else:
                values = [array_literal(p) if type(p) is list else p for p in params]
                cur = conn.execute(to_postgres_sql(sql), values, prepare=True)
            row: Row | None = cur.fetchone()
            return row
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        finally:
            self._pool.putconn(conn)

    def close(self) -> None:
        self._pool.close()


def _read_write_transactions(conn: Any) -> None:
    """A new pooled connection: its transactions (:meth:`PostgresDatabase.write`) start with
    ``BEGIN READ WRITE``; its autocommitted statements keep the session's read-only default."""
    conn.read_only = False


def _has_input(conn: Any) -> bool:
    """Whether an idle connection's socket has something to read (or is gone): the server's
    goodbye, the end of the stream, or an asynchronous notice. No round trip."""
    if conn.closed or conn.broken:
        return True
    try:
        fd = conn.fileno()
    except Exception:  # psycopg raises when the connection is closed
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


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

    def copy_in(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """Binary ``COPY``: psycopg's C row formatter, and no parse or plan per row on the
        server (the ingest append, ``events_repo.insert_new``; docs/benchmarks.md)."""
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        try:
            with self._conn.cursor() as cur, cur.copy(sql) as copy:
                copy.set_types(list(types))
                write = copy.write_row
                for row in rows:
                    write(row)
        except self._psycopg.errors.UniqueViolation as exc:
            raise DuplicateKey(str(exc)) from exc


class _PipelinedPostgresTx(_PostgresTx, PipelinedTx):
    """:class:`PipelinedTx` on a connection in pipeline mode (see
    :meth:`PostgresDatabase.pipelined_write`)."""

    def __init__(self, conn: Any, psycopg: Any, pipe: Any) -> None:
        super().__init__(conn, psycopg)
        self._pipe = pipe

    def send(self, sql: str, params: Sequence[Any] = ()) -> Pending:
        cur = self._run(sql, params)

        def fetch() -> list[Row]:
            if cur.pgresult is None:  # not synced since it was sent
                self.sync()
            rows: list[Row] = cur.fetchall() if cur.description is not None else []
            return rows

        return Pending(fetch)

    def sync(self) -> None:
        try:
            self._pipe.sync()
        except self._psycopg.errors.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.send(sql, params).rows()

    def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._run(sql, params)
        self.sync()
        return int(cur.rowcount)
