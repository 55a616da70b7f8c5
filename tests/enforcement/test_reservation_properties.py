"""Reservations against a naive model (Hypothesis, real storage on both engines, the catalog
port faked): random reserve / commit / release / clock steps on one budget. Every decision,
the recorded usage and the held total equal the model's, which admits a reserve only when
usage + unexpired holds + amount ≤ budget, frees a hold at its TTL, records a commit once (even
past the TTL, even above the estimate) and refuses to commit a released reservation."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from allotment.clock import FrozenClock
from allotment.domain import enforcement as rules
from allotment.domain.enforcement import Entitled
from allotment.services.enforcement import EnforcementService
from allotment.storage import migrate
from allotment.storage.database import Database, open_database
from allotment.storage.enforcement_repo import EnforcementStore
from tests.enforcement.fakes import FakeCatalog, budget

BUDGET = Decimal(100)
_names = itertools.count()


@pytest.fixture(scope="module")
def db(new_db_url: Callable[[], str]) -> Iterator[Database]:
    database = open_database(new_db_url())
    migrate.migrate(database, 0)
    yield database
    database.close()


@dataclass
class Hold:
    amount: Decimal
    expires_us: int
    status: str = "held"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(1, 45), st.integers(1, 4)),
        st.tuples(st.just("commit"), st.integers(0, 7), st.integers(0, 50)),
        st.tuples(st.just("release"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("wait"), st.integers(0, 3), st.just(0)),
    ),
    max_size=25,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(steps=ops)
@example(steps=[("reserve", 45, 4), ("reserve", 45, 4), ("reserve", 10, 4), ("reserve", 1, 4)])
@example(steps=[("reserve", 40, 1), ("commit", 0, 50), ("reserve", 45, 4), ("reserve", 6, 4)])
def test_reservations_match_the_naive_model(
    db: Database, steps: list[tuple[str, int, int]]
) -> None:
    customer = f"p{next(_names)}"
    cat = FakeCatalog()
    cat.plans["tiny"] = {"b": Entitled("b", "NUMBER", BUDGET, budget=budget())}
    cat.customers[customer] = "tiny"
    clock = FrozenClock(datetime(2026, 12, 3, tzinfo=UTC))
    svc = EnforcementService(EnforcementStore(db), cat, cat, clock)
    now = lambda: int(clock.now().timestamp() * 1_000_000)  # noqa: E731
    holds: dict[str, Hold] = {}
    ids: list[str] = []
    usage = Decimal(0)
    for op, a, b in steps:
        if op == "wait":
            clock.advance(timedelta(seconds=a))
            continue
        if op == "reserve":
            held = sum((h.amount for h in holds.values()
                        if h.status == "held" and h.expires_us > now()), Decimal(0))  # fmt: skip
            allowed = usage + held + a <= BUDGET
            req = rules.parse_authorize(
                {"reserve": [{"feature_reference": "b", "amount": a, "ttl_seconds": b}]}
            )
            if allowed:
                r = svc.authorize(customer, req)
                assert r.reservation_id is not None
                holds[r.reservation_id] = Hold(Decimal(a), now() + b * 1_000_000)
                ids.append(r.reservation_id)
            else:
                with pytest.raises(rules.BudgetExhausted):
                    svc.authorize(customer, req)
            continue
        if not ids:
            continue
        rid = ids[a % len(ids)]
        h = holds[rid]
        if op == "commit":
            if h.status == "released":
                with pytest.raises(rules.ReservationSettled):
                    svc.commit(rid, rules.parse_commit({"amounts": {"b": b}}))
            else:
                v = svc.commit(rid, rules.parse_commit({"amounts": {"b": b}}))
                assert v.status == "committed"
                if h.status != "committed":
                    usage += b
                    h.status = "committed"
        else:
            if h.status == "committed":
                with pytest.raises(rules.ReservationSettled):
                    svc.release(rid)
            else:
                assert svc.release(rid).status == "released"
                h.status = "released"
        assert cat.usage.get((customer, "tokens"), Decimal(0)) == usage
    active = {k: v.amount for k, v in holds.items() if v.status == "held" and v.expires_us > now()}
    assert svc.held(f"id-{customer}") == ({"b": sum(active.values())} if active else {})
