"""Customer-owned entitlements on each real backend: usage over the customer's key and subject
keys, value/history/reset/grants/override/delete through the one engine, the catalog's
put_* calls (mid-period allowance change keeps usage and top-ups), the value cache staying
exact for multi-subject owners, and the customer guard."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.entitlement_inputs import (
    parse_entitlement_create,
    parse_feature_create,
    parse_grant_create,
    parse_reset,
)
from allotment.domain.errors import Conflict, NotFound, PreconditionFailed
from allotment.domain.events import CloudEvent, validate_event
from allotment.domain.owners import Owner
from allotment.services.customer_entitlements import MeteredTerms
from allotment.storage.database import open_database
from tests.support import unique

START = datetime(2025, 6, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    container = Container(Settings(db_url=db_url), open_database(db_url), FrozenClock(NOW))
    container.start()
    try:
        yield container
    finally:
        container.close()


def clock(c: Container) -> FrozenClock:
    assert isinstance(c.clock, FrozenClock)
    return c.clock


def ev(subject: str, tokens: int, at: datetime, event_type: str) -> CloudEvent:
    raw = {
        "specversion": "1.0", "id": unique("e"), "source": "t", "type": event_type,
        "subject": subject, "time": at.isoformat(), "data": {"tokens": tokens},
    }  # fmt: skip
    return validate_event(raw, "event", at + timedelta(minutes=1))


class World:
    def __init__(self, c: Container) -> None:
        self.c = c
        self.event_type = unique("prompt")
        slug = unique("tokens")
        c.meters.create(
            {"slug": slug, "aggregation": "SUM", "eventType": self.event_type,
             "valueProperty": "$.tokens"}
        )  # fmt: skip
        self.feature = unique("f")
        c.features.create(parse_feature_create({"key": self.feature, "name": "F",
                                                "meterSlug": slug}))  # fmt: skip
        self.key = unique("acme")
        self.customer = c.customers.create(
            {"name": "ACME", "key": self.key,
             "usageAttribution": {"subjectKeys": [self.key + "-prod", self.key + "-dev"]}}
        )  # fmt: skip
        self.owner = Owner.customer(self.customer.id)

    def ingest(self, subject: str, tokens: int, at: datetime) -> None:
        self.c.events.ingest([ev(subject, tokens, at, self.event_type)])

    def metered(self, **kw: Any) -> Any:
        body = {"type": "metered", "featureKey": self.feature,
                "usagePeriod": {"interval": "MONTH", "anchor": "2025-06-01T00:00:00Z"},
                "measureUsageFrom": "2025-06-01T00:00:00Z", **kw}  # fmt: skip
        return self.c.entitlements.create(self.owner, parse_entitlement_create(body))

    def value(self, at: datetime | None = None) -> Any:
        plain = self.c.entitlements.plain_value(self.owner, self.feature, at)
        cached = self.c.entitlements.value(self.owner, self.feature, at)
        assert cached == plain
        return plain


def test_usage_is_the_customers_key_and_subject_keys(c: Container) -> None:
    w = World(c)
    w.metered(issueAfterReset=100)
    at = START + timedelta(days=1)
    w.ingest(w.key, 1, at)
    w.ingest(w.key + "-prod", 10, at)
    w.ingest(w.key + "-dev", 20, at)
    w.ingest(w.key + "-other", 1000, at)  # not the customer's
    v = w.value()
    assert v.metered.usage == Decimal(31)
    assert v.metered.balance == Decimal(69)
    # the subject routes do not see customer-owned entitlements
    assert c.entitlements.list_for_subject(w.key, False) == []
    with pytest.raises(NotFound):
        c.entitlements.get(w.key, w.feature)


def test_value_cache_fresh_on_ingest_into_any_subject(c: Container) -> None:
    w = World(c)
    w.metered(issueAfterReset=100)
    assert w.value().metered.usage == 0
    cache = c.entitlements.cache
    if cache is not None:  # the cache answers a customer's checks itself (not the plain path)
        assert cache.serve(w.owner, w.feature, NOW, allow_io=True) is not None
        assert cache.serve(w.owner, w.feature, NOW, allow_io=False) is not None
    for i, subject in enumerate([w.key, w.key + "-prod", w.key + "-dev"] * 2):
        w.ingest(subject, 1, NOW - timedelta(minutes=30 - i))
        assert w.value().metered.usage == i + 1, subject
    # a subject added by a replace counts from then on; a removed one stops counting
    w.ingest(w.key + "-new", 5, NOW - timedelta(minutes=5))
    assert w.value().metered.usage == 6
    c.customers.replace(
        w.customer.id,
        {"name": "ACME", "key": w.key, "usageAttribution": {"subjectKeys": [w.key + "-new"]}},
    )
    assert w.value().metered.usage == 2 + 5  # key (2) + new (5)


def test_key_precedence_moves_usage_when_the_key_owner_goes(c: Container) -> None:
    w = World(c)
    w.metered(issueAfterReset=100)
    other_key = unique("other")
    other = c.customers.create({"name": "O", "key": other_key})
    c.customers.replace(
        w.customer.id,
        {"name": "A", "key": w.key, "usageAttribution": {"subjectKeys": [other_key]}},
    )
    w.ingest(other_key, 7, NOW - timedelta(minutes=20))
    assert w.value().metered.usage == 0  # the key's owner wins
    c.customers.delete(other.id)
    assert w.value().metered.usage == 7


def test_grants_history_reset_override_delete(c: Container) -> None:
    w = World(c)
    made = w.metered(issueAfterReset=100)
    w.ingest(w.key + "-prod", 30, START + timedelta(days=1, hours=2))
    grant = c.grants.create(
        w.owner, w.feature,
        parse_grant_create({"amount": 50, "effectiveAt": "2025-06-02T00:00:00Z",
                            "expiration": {"duration": "MONTH", "count": 1}}),
    )  # fmt: skip
    assert grant.subject_key == ""
    assert [g.id for g in c.grants.list_for_entitlement(w.owner, w.feature, False)][-1] == grant.id
    grants, total = c.grants.list_all([], [], False, paging(), customer_ids=[w.customer.id])
    assert grant.id in {g.id for g in grants}
    assert total == 2  # the allowance grant and the top-up
    assert w.value().metered.balance == Decimal(120)
    hist = c.entitlements.history(w.owner, made.record.id, "DAY", None, None, None)
    assert sum(x.usage for x in hist.history.windowed) == Decimal(30)
    c.entitlements.reset(w.owner, w.feature, parse_reset({"retainAnchor": True}))
    assert w.value().metered.usage == 0
    new = c.entitlements.override(
        w.owner, w.feature,
        parse_entitlement_create({"type": "boolean", "featureKey": w.feature}),
    )  # fmt: skip
    assert new.record.customer_id == w.customer.id
    assert w.value().has_access
    with pytest.raises(Conflict):
        w.metered()
    views, total = c.entitlements.list_all([], [], [], False, paging(), [w.customer.id])
    assert [v.record.id for v in views] == [new.record.id]
    views, _ = c.entitlements.list_all([], [], [], False, paging())  # v1: subjects only
    assert new.record.id not in [v.record.id for v in views]
    c.entitlements.delete(w.owner, new.record.id)
    with pytest.raises(NotFound):
        c.entitlements.get(w.owner, w.feature)


def test_customer_guard(c: Container) -> None:
    w = World(c)
    made = w.metered()
    with pytest.raises(Conflict, match="still has active entitlements"):
        c.customers.delete(w.customer.id)
    c.entitlements.delete(w.owner, made.record.id)
    c.customers.delete(w.customer.id)
    with pytest.raises(PreconditionFailed):
        w.metered()


def test_put_metered_mid_period_change_keeps_usage_and_top_ups(c: Container) -> None:
    w = World(c)
    terms = MeteredTerms("MONTH", START, Decimal(100))
    first = c.customer_entitlements.put_metered(w.customer.id, w.feature, terms)
    w.ingest(w.key, 40, START + timedelta(days=2))
    c.grants.create(
        w.owner, w.feature,
        parse_grant_create({"amount": 10, "effectiveAt": "2025-06-03T00:00:00Z",
                            "priority": 10, "maxRolloverAmount": 10,
                            "expiration": {"duration": "YEAR", "count": 1}}),
    )  # fmt: skip
    assert w.value().metered.balance == Decimal(70)
    # upgrade mid-period: same entitlement, usage kept, new allowance for the whole period
    up = c.customer_entitlements.put_metered(
        w.customer.id, w.feature, MeteredTerms("MONTH", START, Decimal(1000))
    )
    assert up.record.id == first.record.id
    assert up.record.issue_after_reset == Decimal(1000)
    v = w.value()
    assert v.metered.usage == Decimal(40)
    assert v.metered.balance == Decimal(1000 + 10 - 40)
    # the next period issues the new allowance; a change then leaves June as it was
    nxt = w.value(datetime(2025, 7, 2, tzinfo=UTC))
    assert nxt.metered.usage == 0
    assert nxt.metered.balance == Decimal(1000 + 10)
    clock(c).set(datetime(2025, 7, 5, tzinfo=UTC))
    w.ingest(w.key + "-dev", 7, datetime(2025, 7, 4, tzinfo=UTC))
    c.customer_entitlements.put_metered(
        w.customer.id, w.feature, MeteredTerms("MONTH", START, Decimal(500))
    )
    assert w.value().metered.balance == Decimal(500 + 10 - 7)
    june = w.value(datetime(2025, 6, 30, tzinfo=UTC))
    assert june.metered.balance == Decimal(1000 + 10 - 40)
    # downgrade below usage: overage, soft limit switch in place
    down = c.customer_entitlements.put_metered(
        w.customer.id, w.feature, MeteredTerms("MONTH", START, Decimal(20), is_soft_limit=True)
    )
    v = w.value()
    assert down.record.id == first.record.id
    assert v.metered.balance == Decimal(23)
    assert v.has_access  # soft limit
    # another usage period: replaced
    other = c.customer_entitlements.put_metered(
        w.customer.id, w.feature, MeteredTerms("WEEK", START, Decimal(5))
    )
    assert other.record.id != first.record.id


def test_put_static_and_boolean(c: Container) -> None:
    w = World(c)
    s = c.customer_entitlements.put_static(w.customer.id, w.feature, '{"a":1}')
    again = c.customer_entitlements.put_static(w.customer.id, w.feature, '{"a":2}')
    assert again.record.id == s.record.id
    assert w.value().config == '{"a":2}'
    b = c.customer_entitlements.put_boolean(w.customer.id, w.feature)
    assert b.record.type == "boolean"
    assert w.value().has_access
    assert c.customer_entitlements.remove(w.customer.id, w.feature)
    assert not c.customer_entitlements.remove(w.customer.id, w.feature)
    with pytest.raises(NotFound):
        c.entitlements.get(w.owner, w.feature)


def paging() -> Any:
    from allotment.domain.entitlement_inputs import make_paging

    return make_paging(1, 100, None, None, None, None, ("createdAt", "updatedAt", "id"), "id")
