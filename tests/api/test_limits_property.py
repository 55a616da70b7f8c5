"""Nothing stored that cannot be read back (issue 12): arbitrary events and grants inside the
accepted bounds (docs/limits.md) — extreme numbers, times at the range edges, JSON nested to
the allowed depth — are accepted, and afterwards every list, query, value and history route
answers without a 5xx. Hypothesis, a few dozen examples per engine, one server per module.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.domain import limits
from allotment.domain.timeutil import TIME_MAX, TIME_MIN, format_rfc3339
from tests.api import test_features as shared
from tests.api.test_features import create_feature, create_meter, ok
from tests.support import unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc

MAX_INT = 10**limits.NUMBER_INTEGER_DIGITS_MAX - 1
NOW = datetime(2024, 1, 1, tzinfo=UTC)

# ---------------------------------------------------------------- what may be sent

integers = st.one_of(
    st.integers(-MAX_INT, MAX_INT), st.sampled_from([MAX_INT, -MAX_INT, 0, 2**63, -(2**63)])
)
decimals = st.decimals(
    min_value=-Decimal(MAX_INT),
    max_value=Decimal(MAX_INT),
    places=limits.NUMBER_FRACTION_DIGITS_MAX,
    allow_nan=False,
    allow_infinity=False,
)
numbers = st.one_of(integers, decimals)
scalars = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=8), numbers.map(str), st.just("1e60")
)


def json_values(depth: int) -> st.SearchStrategy[Any]:
    """Any JSON value that nests at most ``depth`` levels (a scalar is 0)."""
    if depth <= 0:
        return scalars
    inner = json_values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    )


def deep(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = {"d": leaf}
    return leaf


edge_times = st.sampled_from(
    [TIME_MIN, TIME_MAX - timedelta(microseconds=1), NOW, NOW - timedelta(microseconds=1)]
)
any_time = st.datetimes(
    min_value=TIME_MIN.replace(tzinfo=None),
    max_value=(TIME_MAX - timedelta(days=1)).replace(tzinfo=None),
).map(lambda t: t.replace(tzinfo=UTC))
offsets = st.sampled_from(["Z", "+00:00", "+14:00", "-12:00", "+05:30"])


@st.composite
def time_text(draw: st.DrawFn) -> str | None:
    at = draw(st.one_of(edge_times, any_time, st.none()))
    if at is None:
        return None
    offset = draw(offsets)
    if offset == "Z":
        return format_rfc3339(at)
    sign = 1 if offset[0] == "+" else -1
    shift = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    local = at + shift
    if not TIME_MIN <= at < TIME_MAX or local.year > 9999:
        return format_rfc3339(at)
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + offset


@st.composite
def event_data(draw: st.DrawFn, depth_allowed: int) -> dict[str, Any]:
    data: dict[str, Any] = {"value": draw(st.one_of(numbers, numbers.map(str), scalars))}
    data["g"] = draw(scalars)
    extra = draw(json_values(2))
    data["x"] = extra
    if draw(st.booleans()):  # nested to exactly the depth allowed below data
        data["deep"] = deep(depth_allowed - 1, draw(numbers))
    return data


@st.composite
def batches(draw: st.DrawFn, types: tuple[str, ...], subject: str) -> list[dict[str, Any]]:
    # in a batch, data sits at level 3 (the array 1, the event 2): it may nest 29 levels more
    allowed = limits.JSON_DEPTH_MAX - 3
    events = []
    for _ in range(draw(st.integers(1, 4))):
        e: dict[str, Any] = {"specversion": "1.0", "id": unique("e"), "source": "prop",
                             "type": draw(st.sampled_from(types)), "subject": subject,
                             "data": draw(event_data(allowed))}  # fmt: skip
        t = draw(time_text())
        if t is not None:
            e["time"] = t
        events.append(e)
    return events


grant_amounts = st.one_of(
    st.decimals(min_value=Decimal("0.000000000000000001"), max_value=Decimal(MAX_INT),
                places=limits.NUMBER_FRACTION_DIGITS_MAX),
    st.sampled_from([Decimal(MAX_INT), Decimal("1e-18"), Decimal(1)]),
)  # fmt: skip


def _encode(value: Any) -> str:
    """JSON with every Decimal written as the exact number (json.dumps would need floats)."""
    if isinstance(value, Decimal):
        return format(value, "f") if value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


# ---------------------------------------------------------------- the property


READS = (
    "/api/v1/events",
    "/api/v1/events?subject={subject}",
    "/api/v1/meters/{sum}/query",
    "/api/v1/meters/{sum}/query?subject={subject}",
    "/api/v1/meters/{sum}/query?groupBy=g",
    "/api/v1/meters/{sum}/query?windowSize=DAY&windowTimeZone=America/New_York"
    "&from=2023-12-01T00:00:00Z&to=2024-02-01T00:00:00Z",
    "/api/v1/meters/{max}/query?subject={subject}&windowSize=MONTH&from=1970-01-01T00:00:00Z"
    "&to=2100-01-01T00:00:00Z",
    "/api/v1/meters/{sum}/subjects",
    "/api/v1/meters/{count}/query",
    "/api/v1/meters/{latest}/query?groupBy=g",
    "/api/v1/grants",
    "/api/v1/grants?subject={subject}",
    "/api/v2/grants",
    "/api/v1/entitlements",
    "/api/v2/entitlements",
    "/api/v1/features",
    "/api/v1/subjects",
    "/api/v1/subjects/{subject}/entitlements",
    "{entitlement}",
    "{entitlement}/grants",
    "{entitlement}/value",
    "{entitlement}/value?time=2024-01-01T00:01:00Z",
    "{entitlement}/history?windowSize=DAY&from=2024-01-01T00:00:00Z",
)


def test_whatever_is_accepted_reads_back(tc: httpx.Client) -> None:
    slugs = {agg: create_meter(tc, agg, group_by={"g": "$.g"}) for agg in
             ("SUM", "MAX", "COUNT", "LATEST")}  # fmt: skip
    types = tuple(m["eventType"] for m in slugs.values())
    feature = create_feature(tc, slugs["SUM"]["slug"])

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data: st.DataObject) -> None:
        subject = unique("s")
        interval = data.draw(st.sampled_from(["DAY", "MONTH", "PT1H"]))
        period = {"interval": interval}
        body = {"type": "metered", "featureKey": feature["key"], "usagePeriod": period}
        e = ok(tc.post(f"/api/v1/subjects/{subject}/entitlements", json=body), 201)
        entitlement = f"/api/v1/subjects/{subject}/entitlements/{e['id']}"
        for amount in data.draw(st.lists(grant_amounts, min_size=0, max_size=3)):
            grant = {"amount": amount, "effectiveAt": "2024-01-01T00:00:00Z",
                     "expiration": {"duration": "YEAR", "count": 1}}  # fmt: skip
            if data.draw(st.booleans()):
                grant["recurrence"] = {"interval": "DAY"}
            r = tc.post(entitlement + "/grants", content=_encode(grant),
                        headers={"content-type": "application/json"})  # fmt: skip
            assert r.status_code == 201, r.text
        events = data.draw(batches(types, subject))
        r = tc.post("/api/v1/events", content=_encode(events),
                    headers={"content-type": "application/cloudevents-batch+json"})  # fmt: skip
        assert r.status_code == 204, r.text
        names = {f"{{{k.lower()}}}": m["slug"] for k, m in slugs.items()}
        names |= {"{subject}": subject, "{entitlement}": entitlement}
        for template in READS:
            url = template
            for k, v in names.items():
                url = url.replace(k, v)
            r = tc.get(url)
            assert r.status_code < 500, f"{url}: {r.status_code} {r.text}"
            assert r.status_code == 200, f"{url}: {r.status_code} {r.text}"
        csv = tc.get(f"/api/v1/meters/{slugs['SUM']['slug']}/query",
                     headers={"accept": "text/csv"})  # fmt: skip
        assert csv.status_code == 200, csv.text

    check()
