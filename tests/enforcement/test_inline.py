"""EnforcementService.authorize_inline (the event loop's decision on SQLite): it holds its keys
until the group writer has committed its writes and says who holds a busy key; on PostgreSQL
it is not offered. Real storage, the catalog port faked (tests/enforcement/fakes.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from allotment.clock import FrozenClock
from allotment.domain import enforcement as rules
from allotment.services.enforcement import EnforcementService
from allotment.services.enforcement_views import AuthorizeResult, Busy, Inline
from allotment.storage.database import Database
from allotment.storage.enforcement_repo import EnforcementStore
from tests.enforcement.fakes import FakeCatalog, standard

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
CONSUME = rules.parse_authorize({"consume": [{"feature_reference": "requests_per_minute"}]})


@pytest.fixture
def svc(db: Database) -> Iterator[EnforcementService]:
    cat = standard()
    service = EnforcementService(EnforcementStore(db), cat, cat, FrozenClock(NOW))
    yield service
    service.close()


@contextmanager
def _writer_blocked(db: Database) -> Iterator[None]:
    """An open write transaction on another thread for the duration."""
    opened, done = threading.Event(), threading.Event()

    def hold() -> None:
        with db.write():
            opened.set()
            done.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert opened.wait(10)
    try:
        yield
    finally:
        done.set()
        t.join()


class Written:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: BaseException | None = None

    def __call__(self, exc: BaseException | None) -> None:
        self.error = exc
        self.event.set()


def test_postgres_offers_no_inline_decision(svc: EnforcementService, db: Database) -> None:
    assert svc.inline is (db.dialect == "sqlite")


def test_keys_held_until_the_writes_commit(svc: EnforcementService, db: Database) -> None:
    if not svc.inline:
        pytest.skip("SQLite only")
    first, token = Written(), object()
    with _writer_blocked(db):  # the group writer cannot commit meanwhile
        got = svc.authorize_inline("acme", CONSUME, token, first)
        assert isinstance(got, Inline)
        assert got.pending
        assert isinstance(got.outcome, AuthorizeResult)
        assert not first.event.wait(0.2)  # not written yet: the answer must wait
        busy = svc.authorize_inline("acme", CONSUME, object(), Written())
        assert busy == Busy(token)  # the same customer's key: wait for the first's token
        got_big = svc.authorize_inline("big", CONSUME, object(), Written())
        assert isinstance(got_big, Inline)  # another customer's keys are free
    assert first.event.wait(10)
    assert first.error is None
    second = Written()
    again = svc.authorize_inline("acme", CONSUME, object(), second)
    assert isinstance(again, Inline)
    assert again.pending
    assert second.event.wait(10)
    assert second.error is None
    remaining = [
        o.outcome.remaining["requests_per_minute"]  # type: ignore[union-attr]
        for o in (got, again)
    ]
    assert remaining == [2, 1]  # both counted, in order: the second read the first's write


def test_a_blocking_session_makes_it_busy_without_a_holder(svc: EnforcementService) -> None:
    if not svc.inline:
        pytest.skip("SQLite only")
    ran: list[object] = []
    inside, leave = threading.Event(), threading.Event()

    def blocking() -> None:  # a settlement holds the same key on the thread pool
        cid = svc._source.identify("acme")[0]
        with svc._store.session([f"{cid}\x1frequests_per_minute"]):
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=blocking)
    t.start()
    assert inside.wait(10)
    ran.append(svc.authorize_inline("acme", CONSUME, object(), Written()))
    leave.set()
    t.join()
    assert ran == [Busy(None)]
    assert svc.authorize("acme", CONSUME).remaining["requests_per_minute"] == 2


def test_a_denial_releases_the_keys(svc: EnforcementService) -> None:
    if not svc.inline:
        pytest.skip("SQLite only")
    for _ in range(3):
        w = Written()
        got = svc.authorize_inline("acme", CONSUME, object(), w)
        assert isinstance(got, Inline)
        assert got.pending
        assert w.event.wait(10)
    denied = svc.authorize_inline("acme", CONSUME, object(), Written())
    assert isinstance(denied, Inline)
    assert not denied.pending
    assert isinstance(denied.outcome, rules.RateLimited)
    after = svc.authorize_inline("acme", CONSUME, object(), Written())
    assert isinstance(after, Inline)  # not Busy: nothing kept the key


def test_values_not_cached_send_the_call_to_the_pool(svc: EnforcementService) -> None:
    """A budget's value that would have to be computed (maybe folding usage) is not computed
    on the event loop: ``Busy(None)``, nothing held, and the pool's call decides it."""
    if not svc.inline:
        pytest.skip("SQLite only")
    cat = svc._source
    assert isinstance(cat, FakeCatalog)
    cat.uncached = True
    assert svc.authorize_inline("acme", CONSUME, object(), Written()) == Busy(None)
    checks = rules.parse_authorize({"checks": [{"feature_reference": "priority_queue"}]})
    assert svc.authorize_inline("big", checks, object(), Written()) == Busy(None)
    assert svc.authorize("acme", CONSUME).remaining["requests_per_minute"] == 2
    cat.uncached = False
    w = Written()
    got = svc.authorize_inline("acme", CONSUME, object(), w)
    assert isinstance(got, Inline)  # not Busy: the uncached attempt held nothing
    assert w.event.wait(10)
    assert got.outcome.remaining["requests_per_minute"] == 1  # type: ignore[union-attr]
