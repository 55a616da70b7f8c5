"""The decisions' kept state on SQLite (storage/enforcement_memory.py): loaded from what was
committed (a restarted store decides as the old one would), updated only by writes that
committed, forgotten by settlements; the expiry of holds applies by itself. On PostgreSQL
(no kept state) the same behaviour holds. Real storage, the catalog port faked."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.domain import enforcement as rules
from allotment.domain.errors import DomainError
from allotment.services.enforcement import EnforcementService
from allotment.services.enforcement_views import AuthorizeResult, Inline
from allotment.storage.database import Database
from allotment.storage.enforcement_repo import EnforcementStore
from tests.enforcement.fakes import standard

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
CONSUME = rules.parse_authorize({"consume": [{"feature_reference": "requests_per_minute"}]})


def _reserve(amount: int, ttl: int = 300) -> rules.AuthorizeRequest:
    return rules.parse_authorize(
        {
            "reserve": [
                {"feature_reference": "monthly_token_budget", "amount": amount, "ttl_seconds": ttl}
            ]
        }
    )


def _service(db: Database, clock: FrozenClock) -> EnforcementService:
    cat = standard()
    return EnforcementService(EnforcementStore(db), cat, cat, clock)


def _inline(svc: EnforcementService, ref: str, req: rules.AuthorizeRequest) -> Any:
    """The event loop's decision, waited for; the outcome (a result or the denial)."""
    written = threading.Event()
    failed: list[BaseException | None] = []

    def done(exc: BaseException | None) -> None:
        failed.append(exc)
        written.set()

    if not svc.inline:
        try:
            return svc.authorize(ref, req)
        except DomainError as exc:
            return exc
    got = svc.authorize_inline(ref, req, object(), done)
    assert isinstance(got, Inline)
    if got.pending:
        assert written.wait(10)
        assert failed == [None]
    return got.outcome


def test_a_restarted_store_decides_from_what_was_committed(db: Database) -> None:
    clock = FrozenClock(NOW)
    first = _service(db, clock)
    for left in (2, 1):
        assert _inline(first, "acme", CONSUME).remaining["requests_per_minute"] == left
    assert _inline(first, "acme", _reserve(600)).reservation_id is not None
    first.close()
    second = _service(db, clock)  # a new process: nothing kept, all loaded
    try:
        assert _inline(second, "acme", CONSUME).remaining["requests_per_minute"] == 0
        assert isinstance(_inline(second, "acme", CONSUME), rules.RateLimited)
        assert isinstance(_inline(second, "acme", _reserve(401)), rules.BudgetExhausted)
        assert _inline(second, "acme", _reserve(400)).remaining["monthly_token_budget"] == 0
    finally:
        second.close()


def test_settlements_free_the_hold_for_the_next_decision(db: Database) -> None:
    svc = _service(db, FrozenClock(NOW))
    try:
        held = _inline(svc, "acme", _reserve(600))
        assert isinstance(_inline(svc, "acme", _reserve(401)), rules.BudgetExhausted)
        svc.release(held.reservation_id)
        again = _inline(svc, "acme", _reserve(1000))  # the release was seen
        assert isinstance(again, AuthorizeResult)
        svc.commit(again.reservation_id, rules.parse_commit({"amounts": {}}))
        assert isinstance(_inline(svc, "acme", _reserve(1000)), AuthorizeResult)
    finally:
        svc.close()


def test_holds_stop_counting_at_their_expiry(db: Database) -> None:
    clock = FrozenClock(NOW)
    svc = _service(db, clock)
    try:
        _inline(svc, "acme", _reserve(700, ttl=60))
        _inline(svc, "acme", _reserve(300, ttl=120))
        assert isinstance(_inline(svc, "acme", _reserve(1)), rules.BudgetExhausted)
        clock.advance(timedelta(seconds=60))  # the first hold's instant: it no longer counts
        assert _inline(svc, "acme", _reserve(700)).remaining["monthly_token_budget"] == 0
        clock.advance(timedelta(seconds=60))
        assert _inline(svc, "acme", _reserve(300)).remaining["monthly_token_budget"] == 0
    finally:
        svc.close()


def test_a_write_that_failed_is_not_kept(db: Database) -> None:
    svc = _service(db, FrozenClock(NOW))
    if not svc.inline:
        svc.close()
        pytest.skip("SQLite: the group writer")
    batcher = svc._store._batcher
    assert batcher is not None
    try:
        assert _inline(svc, "acme", CONSUME).remaining["requests_per_minute"] == 2
        write = batcher._write

        def failing(tx: Any, items: Any) -> None:
            raise RuntimeError("disk on fire")

        batcher._write = failing
        errors: list[BaseException | None] = []
        written = threading.Event()

        def done(exc: BaseException | None) -> None:
            errors.append(exc)
            written.set()

        got = svc.authorize_inline("acme", CONSUME, object(), done)
        assert isinstance(got, Inline)
        assert written.wait(10)
        assert isinstance(errors[0], RuntimeError)
        batcher._write = write
        # the failed decision counts for nothing: neither stored nor kept
        assert _inline(svc, "acme", CONSUME).remaining["requests_per_minute"] == 1
    finally:
        svc.close()
