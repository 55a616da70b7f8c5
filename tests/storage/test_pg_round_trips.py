"""What a read costs on PostgreSQL, counted in round trips on the wire (libpq's protocol
trace), and what must not change with it: a server that ended a pooled connection costs no
request, a read cannot write, an error leaves nothing open. The held reservations of a
customer (one statement now) on both engines.

A round trip is a message the client then waits on: a simple ``Query`` or an extended
protocol ``Sync`` (Parse/Bind/Execute before it travel together)."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.domain import enforcement as rules
from allotment.domain.events import PreparedEvent, validate_event
from allotment.services.enforcement import EnforcementService
from allotment.services.events import EventService, prepare
from allotment.storage import migrate
from allotment.storage.database import Database, PoolSettings, open_database
from allotment.storage.enforcement_repo import EnforcementStore
from tests.enforcement.fakes import standard

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
BUDGET = "monthly_token_budget"


@pytest.fixture
def pg(db_url: str, backend: str) -> Iterator[Database]:
    """One pooled connection, so every read and write below uses the traced one."""
    if backend != "postgres":
        pytest.skip("PostgreSQL's round trips")
    from allotment.storage.postgres_database import PostgresDatabase

    db = PostgresDatabase(db_url, PoolSettings(min_size=1, max_size=1))
    migrate.migrate(db, 0)
    with db.write() as tx:
        tx.execute("CREATE TABLE rt_probe (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
        tx.execute("INSERT INTO rt_probe VALUES ('a', 1), ('b', 2)")
    yield db
    db.close()


class Trace:
    """libpq's trace of the one pooled connection (the frontend's messages are ``F``)."""

    def __init__(self, db: Database) -> None:
        with db.read() as tx:
            self.conn: Any = tx._conn  # type: ignore[attr-defined]  # the traced connection
        self._file = tempfile.NamedTemporaryFile("w+", suffix=".trace", delete=False)
        self.path = Path(self._file.name)

    def __enter__(self) -> Trace:
        from psycopg import pq

        self.conn.pgconn.trace(self._file.fileno())
        self.conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.pgconn.untrace()
        self._file.close()

    def sent(self) -> list[str]:
        """The frontend's round-trip messages, in order: the text of each simple query, or
        ``Sync`` after an extended-protocol statement (the statement's text if it was parsed
        then)."""
        out: list[str] = []
        parsed = ""
        for line in self.path.read_text().splitlines():
            m = re.match(r"F\s+\d+\s+(\w+)\s*(.*)", line)
            if m is None:
                continue
            kind, rest = m.groups()
            if kind == "Query":
                out.append(rest.strip().strip('"'))
            elif kind == "Parse":
                parsed = rest
            elif kind == "Sync":
                out.append(f"Sync {parsed}".strip())
                parsed = ""
        return out


def test_a_read_costs_one_round_trip_per_statement(pg: Database) -> None:
    with Trace(pg) as t:
        with pg.read() as tx:
            assert tx.execute("SELECT v FROM rt_probe WHERE k = ?", ("a",)) == [(1,)]
            assert tx.execute("SELECT count(*) FROM rt_probe") == [(2,)]
        sent = t.sent()
    # the statements themselves: no probe, BEGIN, COMMIT, ROLLBACK or DEALLOCATE
    assert len(sent) == 2, sent
    assert "rt_probe WHERE k = $1" in sent[0]
    assert sent[1] == "SELECT count(*) FROM rt_probe", sent


def test_a_write_is_one_transaction_read_write(pg: Database) -> None:
    with Trace(pg) as t:
        with pg.write() as tx:
            tx.execute("UPDATE rt_probe SET v = v + 1 WHERE k = ?", ("a",))
        sent = t.sent()
    assert [s.split()[0] for s in sent] == ["BEGIN", "Sync", "COMMIT"], sent
    assert "READ WRITE" in sent[0]
    with pg.read() as tx:
        assert tx.execute("SELECT v FROM rt_probe WHERE k = 'a'") == [(2,)]


def test_prepared_statements_survive_reads(pg: Database) -> None:
    """psycopg prepares a statement run often (5 times) and forgets every prepared statement
    on a ROLLBACK; reads roll nothing back now, so the sixth run of a read sends no Parse."""
    for _ in range(6):
        with pg.read() as tx:
            tx.execute("SELECT v FROM rt_probe WHERE k = ?", ("b",))
    with Trace(pg) as t:
        with pg.read() as tx:
            assert tx.execute("SELECT v FROM rt_probe WHERE k = ?", ("b",)) == [(2,)]
        sent = t.sent()
    assert sent == ["Sync"], sent  # Bind/Execute of the prepared statement only


def test_a_read_cannot_write(pg: Database) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), pg.read() as tx:
        tx.execute("UPDATE rt_probe SET v = 99 WHERE k = 'a'")
    with pg.read() as tx:  # the connection is usable and nothing changed
        assert tx.execute("SELECT v FROM rt_probe ORDER BY k") == [(1,), (2,)]


def test_a_failed_write_rolls_back_and_the_connection_serves_on(pg: Database) -> None:
    def fail_after_update() -> None:
        with pg.write() as tx:
            tx.execute("UPDATE rt_probe SET v = 50 WHERE k = 'a'")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_after_update()
    with pg.read() as tx:
        assert tx.execute("SELECT v FROM rt_probe WHERE k = 'a'") == [(1,)]


def test_a_connection_the_server_ended_costs_no_request(pg: Database, db_url: str) -> None:
    """No probe round trip: the server's goodbye on the socket marks the pooled connection,
    which is replaced; the read after the termination is answered."""
    import psycopg

    with pg.read() as tx:
        (pid,) = tx.execute("SELECT pg_backend_pid()")[0]
    with psycopg.connect(db_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with pg.read() as tx:
        (again,) = tx.execute("SELECT pg_backend_pid()")[0]
    assert again != pid


# ------------------------------------------------------------------ held reservations


@pytest.fixture
def svc(db_url: str) -> Iterator[tuple[EnforcementService, FrozenClock]]:
    database = open_database(db_url)
    migrate.migrate(database, 0)
    cat = standard()
    clock = FrozenClock(NOW)
    yield EnforcementService(EnforcementStore(database), cat, cat, clock), clock
    database.close()


def test_held_is_the_kept_total_less_what_expired(
    svc: tuple[EnforcementService, FrozenClock],
) -> None:
    s, clock = svc

    def reserve(amount: str, ttl: int) -> str:
        body = {"reserve": [{"feature_reference": BUDGET, "amount": amount, "ttl_seconds": ttl}]}
        found = s.authorize("acme", rules.parse_authorize(body)).reservation_id
        assert found is not None
        return found

    assert s.held("id-acme") == {}
    reserve("300.5", 60)
    long = reserve("200", 120)
    assert s.held("id-acme") == {BUDGET: Decimal("500.5")}
    assert s.held("id-big") == {}
    clock.advance(timedelta(seconds=59))
    assert s.held("id-acme") == {BUDGET: Decimal("500.5")}
    clock.advance(timedelta(seconds=1))  # the first expired (its total not swept yet)
    assert s.held("id-acme") == {BUDGET: Decimal("200")}
    assert s.release(long).status == "released"
    assert s.held("id-acme") == {}
    reserve("7", 60)
    assert s.held("id-acme") == {BUDGET: Decimal("7")}


def test_a_customer_with_its_subjects_is_one_round_trip(pg: Database) -> None:
    from allotment.services.customers import CustomerService

    svc = CustomerService(pg, FrozenClock(NOW))
    subjects = {"subjectKeys": ["z-app", "a-app", "m-app"]}
    made = svc.create({"name": "Acme", "key": "acme-rt", "usageAttribution": subjects})
    with Trace(pg) as t:
        found = svc.get("acme-rt")
        sent = t.sent()
    assert len(sent) == 1, sent
    assert found == made
    assert found.subject_keys == ("z-app", "a-app", "m-app")  # their order, not sorted
    svc.delete("acme-rt")
    gone = svc.get(made.id)  # a deleted customer reads as it was, with the released subjects
    assert gone.deleted_at is not None
    assert gone.subject_keys == ("z-app", "a-app", "m-app")
    bare = svc.create({"name": "Bare", "key": "bare-rt"})
    assert svc.get("bare-rt").subject_keys == bare.subject_keys == ()


def test_a_one_statement_read_is_one_round_trip(pg: Database) -> None:
    from allotment.storage import usage_marks

    sql, bare = "SELECT v FROM rt_probe WHERE k = ?", "SELECT count(*) FROM rt_probe"
    with Trace(pg) as t:  # prepared at once: a first run is Parse, then Bind/Execute
        assert usage_marks.read_one(pg, sql, ("a",)) == (1,)
        assert len(t.sent()) == 2, t.sent()
    usage_marks.read_one(pg, bare)
    with Trace(pg) as t:
        assert usage_marks.read_one(pg, sql, ("b",)) == (2,)
        assert usage_marks.read_one(pg, bare) == (2,)
        sent = t.sent()
    assert sent == ["Sync", "Sync"], sent  # the prepared statements: Bind/Execute only


def _single(i: int) -> PreparedEvent:
    raw = {
        "specversion": "1.0",
        "id": f"rt-{i}",
        "source": "rt",
        "type": "prompt",
        "subject": "cust",
        "time": "2026-12-03T07:00:00Z",
        "data": {"tokens": 1},
    }
    return prepare(validate_event(raw, "event", NOW))


def test_a_group_of_single_events_commits_in_one_round_trip(pg: Database) -> None:
    """A group of fewer than ``COPY_MIN_ROWS`` events (16 clients sending one each):
    ``BEGIN``, the meters lock, the append with its fold-queue row and ``COMMIT`` travel
    together; a group with repeats too, each request counting only what it stored."""
    events = EventService(pg, FrozenClock(NOW))
    with Trace(pg) as t:
        assert events.write_batches([[_single(0)], [_single(1)], [_single(2)]]) == [1, 1, 1]
        sent = t.sent()
    assert len(sent) == 1, sent
    assert sent[0].startswith("Sync"), sent
    with Trace(pg) as t:
        again = [[_single(0)], [_single(3), _single(1)], [_single(3)], [_single(4)]]
        assert events.write_batches(again) == [0, 1, 0, 1]
        sent = t.sent()
    assert len(sent) == 1, sent
    with pg.read() as tx:
        assert tx.execute("SELECT count(*) FROM events") == [(5,)]
        assert tx.execute("SELECT count(*) FROM usage_fold_batches") == [(2,)]
    assert events.settle()
    with pg.read() as tx:
        assert tx.execute("SELECT count(*) FROM usage_fold_batches") == [(0,)]
