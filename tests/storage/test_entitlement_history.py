"""Entitlement history through the real service on a real database (SQLite and PostgreSQL).

Property: for a SUM or COUNT feature, whatever ``[from, to]``, window size, time zone, usage
period, grants and resets, the windowed usages and the burn-down usages of ``history`` each
add up to the meter query of the same span ``[s, e)`` (``s = max(floor_minute(from),
measureUsageFrom)``, ``e = ceil_minute(to)``); both lists are contiguous from ``s`` (the first
window clipped there), the burn-down ends at ``e`` and is never empty, and a window's
``balanceAtStart`` is the entitlement's value at that instant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count, pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from allotment.clock import FrozenClock
from allotment.container import Container
from allotment.domain.entitlement_inputs import (
    parse_entitlement_create,
    parse_feature_create,
    parse_grant_create,
    parse_reset,
)
from allotment.domain.errors import InvalidInput
from allotment.domain.events import validate_event
from allotment.domain.timeutil import ceil_minute, floor_minute, format_rfc3339
from allotment.services.meter_queries import MeterQuery
from tests.support import frozen_container, unique

T0 = datetime(2025, 3, 29, 0, 0, tzinfo=UTC)  # Budapest springs forward on 2025-03-30
SPAN_MIN = 3 * 24 * 60
END = T0 + timedelta(minutes=SPAN_MIN)
ZONES = ("UTC", "Europe/Budapest", "Asia/Kolkata")
MINUTE_OFFSET = st.one_of(
    st.integers(0, SPAN_MIN),
    st.integers(0, SPAN_MIN // 60).map(lambda h: h * 60),  # often on an hour / period boundary
)
EVENT = st.tuples(
    st.integers(-120 * 60_000, SPAN_MIN * 60_000 - 1),  # ms after T0; some before measurement
    st.one_of(
        st.integers(0, 50).map(Decimal),
        st.decimals(min_value=0, max_value=50, places=2, allow_nan=False),
    ),
)
_ids = count()


class World:
    """A SUM and a COUNT meter with one feature each, on one container."""

    def __init__(self, c: Container) -> None:
        self.c = c
        assert isinstance(c.clock, FrozenClock)
        self.clock = c.clock
        self.features: dict[str, tuple[str, str]] = {}  # aggregation → (meter slug, feature key)
        for aggregation in ("SUM", "COUNT"):
            slug = unique("hm")
            body: dict[str, Any] = {"slug": slug, "aggregation": aggregation, "eventType": slug}
            if aggregation == "SUM":
                body["valueProperty"] = "$.value"
            c.meters.create(body)
            key = unique("hf")
            c.features.create(parse_feature_create({"key": key, "name": key, "meterSlug": slug}))
            self.features[aggregation] = (slug, key)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with frozen_container(db_url, T0) as c:
        yield World(c)


def _rfc(at: datetime) -> str:
    return format_rfc3339(at)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    aggregation=st.sampled_from(["SUM", "COUNT"]),
    period=st.sampled_from(["DAY", "PT6H", "MONTH", "PT1H"]),
    anchor_min=st.integers(0, 24 * 60),
    start_min=st.integers(0, 12 * 60).map(lambda m: m + 7 * (m % 2)),  # often off the hour
    grants=st.lists(
        st.tuples(st.integers(1, 400), st.integers(0, 4 * 24), st.sampled_from([None, "PT4H"])),
        max_size=2,
    ),
    issue_after_reset=st.sampled_from([None, 100]),
    reset_min=st.one_of(st.none(), MINUTE_OFFSET),
    events=st.lists(EVENT, max_size=25),
    bounds=st.tuples(MINUTE_OFFSET, MINUTE_OFFSET, st.integers(0, 59), st.integers(0, 59)),
    size=st.sampled_from(["MINUTE", "HOUR", "DAY", "MONTH"]),
    zone=st.sampled_from(ZONES),
    defaults=st.booleans(),
)
@example(  # the issue: a fresh entitlement, DAY windows, from = measureUsageFrom, to = now
    aggregation="SUM", period="MONTH", anchor_min=0, start_min=607, grants=[],
    issue_after_reset=100, reset_min=None, events=[(607 * 60_000 + 5, Decimal(10))],
    bounds=(0, 0, 0, 0), size="DAY", zone="UTC", defaults=True,
)  # fmt: skip
@example(  # to exactly on a programmatic reset
    aggregation="SUM", period="DAY", anchor_min=0, start_min=0, grants=[(50, 30, "PT4H")],
    issue_after_reset=100, reset_min=None, events=[(60_000 * 60 * 23, Decimal(130))],
    bounds=(0, 24 * 60, 0, 0), size="HOUR", zone="UTC", defaults=False,
)  # fmt: skip
def test_windowed_and_burndown_usage_add_up_to_the_meter_query(
    world: World,
    aggregation: str,
    period: str,
    anchor_min: int,
    start_min: int,
    grants: list[tuple[int, int, str | None]],
    issue_after_reset: int | None,
    reset_min: int | None,
    events: list[tuple[int, Decimal]],
    bounds: tuple[int, int, int, int],
    size: str,
    zone: str,
    defaults: bool,
) -> None:
    c, clock = world.c, world.clock
    slug, key = world.features[aggregation]
    subject = unique("hs")
    start = T0 + timedelta(minutes=start_min)  # measureUsageFrom
    clock.set(start)
    body: dict[str, Any] = {
        "type": "metered",
        "featureKey": key,
        "usagePeriod": {"interval": period, "anchor": _rfc(T0 + timedelta(minutes=anchor_min))},
        "measureUsageFrom": _rfc(start),
    }
    if issue_after_reset is not None:
        body["issueAfterReset"] = issue_after_reset
    ent = c.entitlements.create(subject, parse_entitlement_create(body)).record
    for amount, hours, recurrence in grants:
        grant: dict[str, Any] = {
            "amount": amount,
            "effectiveAt": _rfc(start),
            "expiration": {"duration": "HOUR", "count": hours + 1},
            "maxRolloverAmount": amount,
        }
        if recurrence is not None:
            grant["recurrence"] = {"interval": recurrence, "anchor": _rfc(start)}
        c.grants.create(subject, ent.id, parse_grant_create(grant))
    if reset_min is not None and T0 + timedelta(minutes=reset_min) > start + timedelta(minutes=1):
        clock.set(T0 + timedelta(minutes=reset_min))
        with contextlib.suppress(InvalidInput):  # one the rules refuse changes nothing
            c.entitlements.reset(subject, ent.id, parse_reset({}))
    clock.set(END)
    batch = []
    for ms, value in events:
        raw = {
            "specversion": "1.0",
            "id": f"h{next(_ids)}",
            "source": "t",
            "type": slug,
            "subject": subject,
            "time": (T0 + timedelta(milliseconds=ms)).isoformat(),
            "data": {"value": value},
        }
        batch.append(validate_event(raw, "event", END))
    if batch:
        c.events.ingest(batch)

    lo, hi, lo_s, hi_s = bounds
    first = max(start, T0 + timedelta(minutes=min(lo, hi), seconds=lo_s))
    last = max(first, T0 + timedelta(minutes=max(lo, hi), seconds=hi_s))
    if defaults:  # from = lastReset, to = now
        view = c.entitlements.history(subject, ent.id, size, None, None, zone)
        last_reset = c.entitlements.get(subject, ent.id).last_reset
        assert last_reset is not None
        s, e = last_reset, END
    else:
        view = c.entitlements.history(subject, ent.id, size, first, last, zone)
        s, e = floor_minute(first), ceil_minute(last)
    h = view.history

    metered = Decimal(0)
    if s < e:
        query = MeterQuery(from_=s, to=e, subjects=(subject,))
        metered = sum((Decimal(r.value) for r in c.meter_queries.query(slug, query).rows), metered)

    burndown = h.burndown
    assert burndown, "burndownHistory is never empty"
    assert burndown[0].from_ == s
    assert burndown[-1].to == e
    assert all(a.to == b.from_ for a, b in pairwise(burndown))
    assert sum((b.usage for b in burndown), Decimal(0)) == metered

    windows = h.windowed
    if s == e:
        assert windows == ()
        return
    assert windows[0].from_ == s  # clipped, in the requested zone (same instant)
    assert all(a.to == b.from_ for a, b in pairwise(windows))
    assert windows[-1].from_ < e <= windows[-1].to
    assert sum((w.usage for w in windows), Decimal(0)) == metered
    assert windows[0].balance_at_start == burndown[0].balance_at_start
    for w in {windows[0], windows[len(windows) // 2], windows[-1]}:
        value = c.entitlements.plain_value(subject, ent.id, w.from_)
        assert value.metered is not None
        assert w.balance_at_start == value.metered.balance, (w, value)
