"""Property: a customer's metered value — through the value cache and through the plain
computation — equals a naive model (allowance minus the sum of the events whose subject is the
customer's key or one of its subject keys *now*), across random sequences of ingest into any
of its subjects (or a stranger's), early or late against the cache's checkpoint, and replaces
that change its subject keys. On each real backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.entitlement_inputs import parse_entitlement_create, parse_feature_create
from allotment.domain.events import validate_event
from allotment.domain.owners import Owner
from allotment.storage.database import open_database
from tests.support import unique

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
ALLOWANCE = Decimal(1000)
SPARE = ("s1", "s2", "s3")

ingest_op = st.tuples(
    st.just("ingest"),
    st.sampled_from(["key", "s1", "s2", "s3", "stranger"]),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=600),  # minutes before now (the checkpoint is 11:00)
)
replace_op = st.tuples(st.just("replace"), st.sets(st.sampled_from(SPARE)), st.just(0), st.just(0))
ops = st.lists(st.one_of(ingest_op, ingest_op, replace_op), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def c(new_db_url: object) -> Iterator[Container]:
    url = new_db_url()  # type: ignore[operator]
    container = Container(Settings(db_url=url), open_database(url), FrozenClock(NOW))
    container.start()
    try:
        yield container
    finally:
        container.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=ops)
def test_customer_value_equals_the_naive_model(c: Container, sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    event_type, meter, feature = unique("p"), unique("m"), unique("f")
    c.meters.create({"slug": meter, "aggregation": "SUM", "eventType": event_type,
                     "valueProperty": "$.n"})  # fmt: skip
    c.features.create(parse_feature_create({"key": feature, "name": "F", "meterSlug": meter}))
    key = unique("k")
    names = {"key": key, "stranger": unique("x"), **{s: f"{key}-{s}" for s in SPARE}}
    subjects = {"s1"}
    customer = c.customers.create(
        {"name": "C", "key": key, "usageAttribution": {"subjectKeys": [names["s1"]]}}
    )
    owner = Owner.customer(customer.id)
    c.entitlements.create(owner, parse_entitlement_create({
        "type": "metered", "featureKey": feature, "issueAfterReset": ALLOWANCE,
        "usagePeriod": {"interval": "MONTH", "anchor": "2025-06-01T00:00:00Z"},
        "measureUsageFrom": "2025-06-01T00:00:00Z",
    }))  # fmt: skip
    events: list[tuple[str, int]] = []
    for kind, who, amount, minutes in sequence:
        if kind == "ingest":
            at = NOW - timedelta(minutes=minutes)
            raw = {
                "specversion": "1.0",
                "id": unique("e"),
                "source": "prop",
                "type": event_type,
                "subject": names[who],
                "time": at.isoformat(),
                "data": {"n": amount},
            }
            c.events.ingest([validate_event(raw, "event", NOW)])
            events.append((who, amount))
        else:
            subjects = set(who)
            body = {
                "name": "C",
                "key": key,
                "usageAttribution": {"subjectKeys": [names[s] for s in sorted(subjects)]},
            }
            c.customers.replace(customer.id, body)  # fmt: skip
        counted = {"key"} | subjects
        usage = Decimal(sum(a for w, a in events if w in counted))
        cached = c.entitlements.value(owner, feature, None)
        plain = c.entitlements.plain_value(owner, feature, None)
        assert cached == plain
        assert plain.metered is not None
        assert plain.metered.usage == usage
        assert plain.metered.balance == max(ALLOWANCE - usage, Decimal(0))
