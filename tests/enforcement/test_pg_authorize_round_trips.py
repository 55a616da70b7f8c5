"""What one authorize (one check, one consume, one reserve: the bench's call) costs on
PostgreSQL, counted in round trips on the wire of every pooled connection (libpq's protocol
trace, as tests/storage/test_pg_round_trips.py counts them), on the real catalog with warm
caches; and that the advisory keys leave no rows behind."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain import enforcement as rules
from allotment.http.app import create_app
from allotment.storage.database import PoolSettings, open_database
from tests.api.test_authorize_fast_path import T0, _setup

POOL = 4

BODY = {
    "checks": [{"feature_reference": "models", "value": "small"}],
    "consume": [{"feature_reference": "rpm"}],
    "reserve": [{"feature_reference": "tokens", "amount": "1", "ttl_seconds": 300}],
}


@pytest.fixture
def container(new_db_url: Callable[[], str], backend: str) -> Iterator[Container]:
    if backend != "postgres":
        pytest.skip("PostgreSQL's round trips")
    url = new_db_url()
    pool = PoolSettings(min_size=POOL, max_size=POOL)
    c = Container(Settings(db_url=url), open_database(url, pool=pool), FrozenClock(T0))
    c.start()
    try:

        async def setup() -> None:
            transport = httpx.ASGITransport(app=create_app(c, fast_paths=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await _setup(client)

        asyncio.run(setup())
        yield c
    finally:
        c.close()


class PoolTrace:
    """libpq's trace of every pooled connection (the pool holds exactly ``POOL``)."""

    def __init__(self, c: Container) -> None:
        self._pool: Any = c.db._pool  # type: ignore[attr-defined]
        self._conns = [self._pool.getconn(timeout=10) for _ in range(POOL)]
        self._files = [
            tempfile.NamedTemporaryFile("w+", suffix=".trace", delete=False) for _ in self._conns
        ]
        self._marks = [0] * POOL
        self._prepared: list[dict[str, str]] = [{} for _ in self._conns]

    def __enter__(self) -> PoolTrace:
        for conn, f in zip(self._conns, self._files, strict=True):
            conn.pgconn.trace(f.fileno())
            self._pool.putconn(conn)
        return self

    def __exit__(self, *exc: object) -> None:
        for conn, f in zip(self._conns, self._files, strict=True):
            conn.pgconn.untrace()
            f.close()

    def names(self) -> None:
        """The text of the statements the connections prepared (read after the trace)."""
        conns = [self._pool.getconn(timeout=10) for _ in range(POOL)]
        for conn in conns:
            rows = conn.execute("SELECT name, statement FROM pg_prepared_statements").fetchall()
            self._prepared[self._conns.index(conn)] = dict(rows)
        for conn in conns:
            self._pool.putconn(conn)

    def mark(self) -> None:
        """Count from here on (what came before names the prepared statements)."""
        self._marks = [len(Path(f.name).read_text().splitlines()) for f in self._files]

    def sent(self) -> list[str]:
        """In time order, the messages a client then waits on: a simple ``Query``, or a
        ``Sync`` with the statements parsed or bound since the one before."""
        out: list[tuple[str, str]] = []
        for f, mark, known in zip(self._files, self._marks, self._prepared, strict=True):
            names = dict(known)
            pending: list[str] = []
            parsed: set[str] = set()
            for n, line in enumerate(Path(f.name).read_text().splitlines()):
                m = re.match(r"(\S+ \S+)\s+F\s+\d+\s+(\w+)\s*(.*)", line)
                if m is None:
                    continue
                at, kind, rest = m.groups()
                quoted = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
                if kind == "Parse" and len(quoted) >= 2:
                    names[quoted[0]] = quoted[1]
                    parsed.add(quoted[0])
                    pending.append(quoted[1][:70])
                elif kind == "Bind" and len(quoted) >= 2 and quoted[1] not in ("", *parsed):
                    pending.append("prepared: " + names.get(quoted[1], quoted[1])[:60])
                if kind in ("Sync", "Query"):
                    parsed = set()
                if n < mark:
                    if kind in ("Sync", "Query"):
                        pending = []
                    continue
                if kind == "Query":
                    out.append((at, rest.strip().strip('"')[:80]))
                elif kind == "Sync":
                    out.append((at, "Sync " + " | ".join(pending)))
                    pending = []
        return [text for _, text in sorted(out)]


def _authorize(c: Container, **extra: Any) -> None:
    result = c.enforcement.authorize("acme", rules.parse_authorize({**BODY, **extra}))
    assert result.reservation_id is not None


def test_one_authorize_round_trips(container: Container) -> None:
    for _ in range(2):  # warm: the catalog's caches, the budget's memo, prepared statements
        _authorize(container)
    with PoolTrace(container) as t:  # the third of the customer's 3 per minute
        _authorize(container)
    t.names()
    sent = t.sent()
    print("\n".join(sent))
    # the whole call is the session's two round trips: BEGIN, the keys' advisory locks, the
    # one state read and the catalog's one read (the cached view checked against the catalog
    # version, the budget's memoised value against its marks, ingest's tail: one statement,
    # after the locks); then the decision's writes and COMMIT. The reserved budget's meter
    # comes with its memoised value (no read)
    assert len(sent) == 2, sent
    assert "BEGIN READ WRITE" in sent[0]
    assert "advisory" in sent[0]
    assert "SELECT * FROM (SELECT 1) AS one LEFT JOIN (SELECT * FROM (SELECT" in sent[0]
    assert sent[0].index("advisory") < sent[0].index("LEFT JOIN")
    assert sent[0].index("plan_cache_mode") < sent[0].index("advisory")
    # BEGIN, the session's generic plans, the locks, the state with the read
    assert sent[0].count(" | ") == 3, sent
    assert sent[1].startswith("Sync WITH w0 AS (INSERT INTO rate_limit_logs")
    assert sent[1].endswith("COMMIT")
    assert not any("FROM meters" in s for s in sent), sent
    with container.db.read() as tx:
        assert tx.execute("SELECT count(*) FROM enforcement_locks") == [(0,)]


def test_the_session_plans_its_statements_once(container: Container) -> None:
    """The session's prepared statements run on their generic plan (PostgreSQL would
    otherwise plan the state read afresh at every call: half of the backend's CPU per
    authorize), and only in the session's transaction: every pooled connection is back to
    the default afterwards."""
    for _ in range(8 * POOL):  # psycopg prepares a statement at its 6th run on a connection
        _authorize(container, consume=[])  # (rpm allows 3 a minute)
    pool: Any = container.db._pool  # type: ignore[attr-defined]
    conns = [pool.getconn(timeout=10) for _ in range(POOL)]
    try:
        plans = []
        for conn in conns:
            assert conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)
            plans += conn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%LEFT JOIN%' OR statement LIKE 'WITH w0 AS%'"
            ).fetchall()
    finally:
        for conn in conns:
            pool.putconn(conn)
    assert any("LEFT JOIN" in p[0] for p in plans), plans  # the state read was prepared
    assert any(p[0].startswith("WITH w0 AS") for p in plans), plans  # and the write
    assert all(p[1] > 0 and p[2] == 0 for p in plans), plans  # generic plans only


def test_a_denial_under_the_keys_commits_nothing(container: Container) -> None:
    """A pure check denied under the keys (the ENUM value is not in the plan): the session
    wrote nothing, so it ends with COMMIT, not ROLLBACK (after which psycopg would forget the
    connection's prepared statements)."""
    _authorize(container)
    body = {**BODY, "checks": [{"feature_reference": "models", "value": "large"}]}
    with PoolTrace(container) as t:
        with pytest.raises(rules.EnumValueNotAllowed):
            container.enforcement.authorize("acme", rules.parse_authorize(body))
    t.names()
    sent = t.sent()
    assert any("advisory" in s for s in sent), sent  # it did take the keys
    assert any(s.endswith("COMMIT") for s in sent), sent
    assert not any("ROLLBACK" in s for s in sent), sent
    _authorize(container)  # the keys are free again
