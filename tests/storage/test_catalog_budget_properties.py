"""Budgets are entitlements: random sequences of ingest, override, plan change, top-up, reset
and time passing, against a naive model of one budget (catalog.md §4, docs/catalog.md).

The model, per usage period (DAY, anchored at the subscription's start):
    remaining = max(0, allowance now + top-up balance − usage in the period)
    usage     = the period's usage (an override or plan change keeps it; a reset starts anew)
and at a period's end (or a reset) the top-ups keep what the allowance did not cover:
    top-ups -= min(top-ups, max(0, usage − allowance)).
Allowances burn before top-ups (priority 1 vs 10); top-ups do not expire within the run.
Checked after every step through the one call, on each real backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.clock import FrozenClock
from allotment.container import Container
from allotment.domain.catalog import parse_feature_spec
from allotment.domain.entitlement_inputs import parse_grant_create, parse_reset
from allotment.domain.events import validate_event
from allotment.domain.owners import Owner
from allotment.domain.timeutil import format_rfc3339
from tests.support import frozen_container, unique

START = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, START) as container:
        yield container


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.integers(0, 400)),
        st.tuples(st.just("override"), st.integers(0, 1000)),
        st.tuples(st.just("unoverride"), st.just(0)),
        st.tuples(st.just("plan"), st.integers(0, 1)),
        st.tuples(st.just("topup"), st.integers(1, 500)),
        st.tuples(st.just("reset"), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 2000)),  # minutes
    ),
    min_size=1,
    max_size=14,
)


@dataclass
class Model:
    allowances: tuple[int, int]
    plan: int = 0
    override: int | None = None
    anchor: datetime = START
    usage: int = 0
    topups: int = 0
    period_start: datetime = START

    @property
    def allowance(self) -> int:
        return self.allowances[self.plan] if self.override is None else self.override

    @property
    def remaining(self) -> int:
        return max(0, self.allowance + self.topups - self.usage)

    def close_period(self, at: datetime) -> None:
        self.topups -= min(self.topups, max(0, self.usage - self.allowance))
        self.usage = 0
        self.period_start = at

    def advance(self, now: datetime) -> None:
        boundary = self.anchor + DAY * ((now - self.anchor) // DAY)
        if boundary > self.period_start:
            self.close_period(boundary)


class World:
    def __init__(self, c: Container, allowances: tuple[int, int]) -> None:
        self.c = c
        self.event_type = unique("completion")
        slug = unique("tokens")
        c.meters.create({"slug": slug, "aggregation": "SUM", "eventType": self.event_type,
                         "valueProperty": "$.tokens"})  # fmt: skip
        self.feature = unique("budget")
        c.catalog.create_feature(parse_feature_spec({
            "reference": self.feature, "name": "Tokens", "type": "NUMBER",
            "meter_reference": slug, "usage_period": "DAY"}))  # fmt: skip
        self.plans = [unique("plan"), unique("plan")]
        for ref, amount in zip(self.plans, allowances, strict=True):
            c.catalog.create_plan({"reference": ref, "name": ref, "entitlements": [
                {"feature_reference": self.feature, "number": amount}]})  # fmt: skip
        self.customer = unique("acme")
        cust = c.customers.create(
            {
                "name": "Acme",
                "key": self.customer,
                "usageAttribution": {"subjectKeys": [self.customer + "-p"]},
            }
        )
        self.owner = Owner.customer(cust.id)
        sub = c.subscriptions.create({"customer_reference": self.customer,
                                      "pricing_plan_reference": self.plans[0]})  # fmt: skip
        self.sub = sub.subscription.id
        self.start = sub.subscription.start_at
        self.n = 0

    @property
    def now(self) -> datetime:
        return self.c.clock.now()

    def wait(self, minutes: int) -> None:
        clock = self.c.clock
        assert isinstance(clock, FrozenClock)
        clock.advance(timedelta(minutes=minutes))

    def wait_seconds(self, seconds: int) -> None:
        clock = self.c.clock
        assert isinstance(clock, FrozenClock)
        clock.advance(timedelta(seconds=seconds))

    def ingest(self, tokens: int) -> None:
        self.n += 1
        subject = self.customer if self.n % 2 else self.customer + "-p"
        raw = {
            "specversion": "1.0",
            "id": unique("e"),
            "source": "t",
            "type": self.event_type,
            "subject": subject,
            "time": format_rfc3339(self.now),
            "data": {"tokens": tokens},
        }
        self.c.events.ingest([validate_event(raw, "event", self.now + timedelta(minutes=1))])

    def patch(self, body: dict[str, object]) -> None:
        self.c.subscriptions.patch(self.sub, body)

    def topup(self, amount: int) -> None:
        self.c.grants.create(
            self.owner,
            self.feature,
            parse_grant_create(
                {
                    "amount": amount,
                    "effectiveAt": format_rfc3339(self.now),
                    "priority": 10,
                    "expiration": {"duration": "YEAR", "count": 1},
                    "maxRolloverAmount": amount,
                }
            ),
        )

    def reset(self) -> None:
        self.c.entitlements.reset(
            self.owner,
            self.feature,
            parse_reset({"effectiveAt": format_rfc3339(self.now), "retainAnchor": True}),
        )

    def budget(self) -> tuple[Decimal, Decimal, bool]:
        (item,) = self.c.subscriptions.entitlements(self.customer)
        assert item.budget is not None
        return item.budget.usage, item.budget.remaining, item.budget.has_access


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(allowances=st.tuples(st.integers(0, 1000), st.integers(0, 1000)), script=steps)
def test_budget_follows_the_naive_model(
    c: Container, allowances: tuple[int, int], script: list[Step]
) -> None:
    w = World(c, allowances)  # the clock runs on from the previous example
    m = Model(allowances, anchor=w.start, period_start=w.start)
    for op, n in script:
        w.wait(1)  # every step in its own minute, after the previous one
        m.advance(w.now)
        if op == "ingest":
            w.ingest(n)
            m.usage += n
        elif op == "override":
            w.patch({"entitlements": [{"feature_reference": w.feature, "number": n}]})
            m.override = n
        elif op == "unoverride":
            w.patch({"entitlements": [{"feature_reference": w.feature, "override": False}]})
            m.override = None
        elif op == "plan":
            w.patch({"pricing_plan_reference": w.plans[n]})
            m.plan = n
        elif op == "topup":
            w.topup(n)
            m.topups += n
        elif op == "reset":
            w.reset()
            m.close_period(w.now.replace(second=0, microsecond=0))
        else:
            w.wait(n)
        w.wait_seconds(30)  # a value at T counts usage before T: read within the minute
        m.advance(w.now)
        for _ in range(2):  # twice in the same minute (the second from the memo)
            usage, remaining, has_access = w.budget()
            assert (usage, remaining) == (m.usage, m.remaining), (op, n, m)
            assert has_access == (m.remaining > 0)
        if op in ("ingest", "topup"):  # the same again within that minute: the memo must go
            if op == "ingest":
                w.ingest(n)
                m.usage += n
            else:
                w.topup(n)
                m.topups += n
            usage, remaining, has_access = w.budget()
            assert (usage, remaining) == (m.usage, m.remaining), ("again", op, n, m)
        w.wait_seconds(30)
        m.advance(w.now)
        usage, remaining, has_access = w.budget()
        assert (usage, remaining) == (m.usage, m.remaining), (op, n, m)
        assert has_access == (m.remaining > 0)
