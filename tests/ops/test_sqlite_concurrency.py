"""The SQLite default under concurrent requests: one process, many threads writing and reading
at once. No 500, no "database is locked", exact totals. Plus how SQLite failures map to HTTP."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from allotment.domain.errors import Unavailable
from allotment.storage.sqlite_database import SqliteDatabase, sqlite_error
from tests.ops.helpers import batch_events, batches_seen, meter_total, post_batch, whole
from tests.support import ServerProcess, running_server, unique

K = 3


@pytest.mark.slow
def test_concurrent_ingest_and_reads_on_one_sqlite_process(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'concurrency.db'}") as server:
        _hammer(server)


def _hammer(server: ServerProcess) -> None:
    subject = unique("sqlc")
    batches = [f"{subject}_b{b}" for b in range(40)]
    local = threading.local()
    opened: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=server.url, timeout=60.0)
            opened.append(local.c)
        return local.c  # type: ignore[no-any-return]

    def write(b: str) -> int:
        return post_batch(client(), batch_events(subject, b, K)).status_code

    def read(i: int) -> int:
        c = client()
        path = [
            "/api/v1/meters/tokens_total/query",
            "/api/v1/meters/api_requests_total/query",
            "/api/v1/events",
            "/readyz",
        ][i % 4]
        return c.get(path, params={"subject": subject} if "meters" in path else None).status_code

    work: list[Callable[[], int]] = [lambda b=b: write(b) for b in batches]
    work += [lambda b=b: write(b) for b in batches[::2]]  # retried batches: same ids
    work += [lambda i=i: read(i) for i in range(80)]
    random.Random(3).shuffle(work)
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda f: f(), work))
    finally:
        for c in opened:
            c.close()
    assert set(statuses) == {200, 204}
    with server.client() as c:
        assert batches_seen(c, subject) == {b: whole(K) for b in batches}
        assert meter_total(c, "api_requests_total", subject) == len(batches) * K
    assert "database is locked" not in server.logs()


def test_sqlite_lock_held_elsewhere_is_unavailable(tmp_path: Path) -> None:
    """Another process holding the write lock past the busy timeout: 503, not 500."""
    path = str(tmp_path / "locked.db")
    db = SqliteDatabase(path)
    with db.write() as tx:
        tx.execute("CREATE TABLE t (x INTEGER)")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        db._conn().execute("PRAGMA busy_timeout=50")  # do not wait the production 30 s
        with pytest.raises(Unavailable, match="SQLITE_BUSY"), db.write() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
    finally:
        other.execute("ROLLBACK")
        other.close()
    with db.write() as tx:  # and the connection is usable afterwards
        tx.execute("INSERT INTO t VALUES (2)")
    with db.read() as tx:
        assert tx.execute("SELECT x FROM t") == [(2,)]
    db.close()


def test_sqlite_cannot_open_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    db = SqliteDatabase.__new__(SqliteDatabase)
    SqliteDatabase.__init__(db, ":memory:")
    db.path = str(blocker / "x.db")  # a path below a regular file cannot be opened
    with pytest.raises(Unavailable, match="cannot open"):
        db.ping()


def test_sqlite_bugs_and_corruption_stay_errors(tmp_path: Path) -> None:
    """SQL errors and a file that is not a database are not outages: they stay 500s."""
    db = SqliteDatabase(str(tmp_path / "ok.db"))
    with pytest.raises(sqlite3.OperationalError), db.read() as tx:
        tx.execute("SELECT * FROM no_such_table")
    db.close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite file" * 100)
    bad = SqliteDatabase(str(garbage))
    with pytest.raises(sqlite3.DatabaseError) as info:
        bad.ping()
    assert not isinstance(sqlite_error(info.value), Unavailable)
    bad.close()


def test_sqlite_error_codes_map_to_unavailable() -> None:
    for code, name in [
        (5, "SQLITE_BUSY"),
        (10, "SQLITE_IOERR"),
        (13, "SQLITE_FULL"),
        (10 | (3 << 8), "SQLITE_IOERR"),
    ]:  # extended code SQLITE_IOERR_WRITE
        exc = sqlite3.OperationalError("boom")
        exc.sqlite_errorcode = code
        mapped = sqlite_error(exc)
        assert isinstance(mapped, Unavailable)
        assert name in mapped.detail
    assert isinstance(sqlite_error(sqlite3.IntegrityError("UNIQUE")), Exception)
