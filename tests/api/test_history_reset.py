"""History (engine-semantics §10) and reset (§8) through the API, on the test clock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from allotment.domain import limits
from tests.api import test_features as shared
from tests.api.test_entitlement_value import Ent
from tests.api.test_features import CLOCK_START, create_feature, ok, problem, set_clock
from tests.support import unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc


# ---------------------------------------------------------------- history


def test_hourly_history(tc: httpx.Client) -> None:
    ent = Ent(tc, usagePeriod={"interval": "DAY"})
    g = ent.grant(100)
    ent.event("2024-01-01T00:30:00Z", value=10)
    ent.event("2024-01-01T02:10:00Z", value=5)
    set_clock(tc, "2024-01-01T03:00:00Z")
    h = ok(tc.get(ent.base + "/history", params={"windowSize": "HOUR"}))
    assert h["windowedHistory"] == [
        {"period": {"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z"},
         "usage": 10, "balanceAtStart": 100},
        {"period": {"from": "2024-01-01T01:00:00Z", "to": "2024-01-01T02:00:00Z"},
         "usage": 0, "balanceAtStart": 90},
        {"period": {"from": "2024-01-01T02:00:00Z", "to": "2024-01-01T03:00:00Z"},
         "usage": 5, "balanceAtStart": 90},
    ]  # fmt: skip
    assert h["burndownHistory"] == [
        {"period": {"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T03:00:00Z"},
         "usage": 15, "overage": 0, "balanceAtStart": 100,
         "grantBalancesAtStart": {g["id"]: 100}, "balanceAtEnd": 85,
         "grantBalancesAtEnd": {g["id"]: 85}, "grantUsages": [{"grantId": g["id"], "usage": 15}]},
    ]  # fmt: skip


def test_history_window_sizes_and_time_zone(tc: httpx.Client) -> None:
    ent = Ent(tc)
    ent.grant(100)
    ent.event("2024-01-01T00:01:00Z", value=1)
    set_clock(tc, "2024-01-03T00:00:00Z")
    params: dict[str, Any] = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T00:03:00Z"}
    minute = ok(tc.get(ent.base + "/history", params={**params, "windowSize": "MINUTE"}))
    assert [w["usage"] for w in minute["windowedHistory"]] == [0, 1, 0]
    day = ok(tc.get(ent.base + "/history", params={"windowSize": "DAY"}))
    assert [w["usage"] for w in day["windowedHistory"]] == [1, 0]
    month = ok(tc.get(ent.base + "/history", params={"windowSize": "MONTH"}))
    assert len(month["windowedHistory"]) == 1
    zoned = ok(tc.get(ent.base + "/history", params={
        "windowSize": "DAY", "from": "2024-01-01T05:00:00Z", "windowTimeZone": "America/New_York",
    }))  # fmt: skip
    first = zoned["windowedHistory"][0]["period"]
    assert first == {"from": "2024-01-01T00:00:00-05:00", "to": "2024-01-02T00:00:00-05:00"}


def test_history_defaults_from_last_reset(tc: httpx.Client) -> None:
    ent = Ent(tc)
    ent.grant(100, maxRolloverAmount=100)
    ent.event("2024-01-01T00:10:00Z", value=10)
    set_clock(tc, "2024-01-01T05:00:00Z")
    ok(tc.post(ent.base + "/reset", json={"effectiveAt": "2024-01-01T04:00:00Z"}), 204)
    h = ok(tc.get(ent.base + "/history", params={"windowSize": "HOUR"}))
    assert [w["period"]["from"] for w in h["windowedHistory"]] == ["2024-01-01T04:00:00Z"]
    assert h["windowedHistory"][0]["balanceAtStart"] == 90


def test_history_of_a_fresh_entitlement_clips_its_first_window(tc: httpx.Client) -> None:
    set_clock(tc, "2024-01-01T10:07:30Z")
    ent = Ent(tc, issueAfterReset=1000)  # measureUsageFrom 10:07 (creation, floored)
    ent.event("2024-01-01T10:07:45Z", value=10)
    ent.event("2024-01-01T10:20:00Z", value=5)
    set_clock(tc, "2024-01-01T10:30:05Z")
    day = ok(tc.get(ent.base + "/history", params={"windowSize": "DAY"}))
    (g,) = ok(tc.get(ent.base + "/grants"))
    assert day == {
        "windowedHistory": [
            {"period": {"from": "2024-01-01T10:07:00Z", "to": "2024-01-02T00:00:00Z"},
             "usage": 15, "balanceAtStart": 1000},
        ],
        "burndownHistory": [
            {"period": {"from": "2024-01-01T10:07:00Z", "to": "2024-01-01T10:31:00Z"},
             "usage": 15, "overage": 0, "balanceAtStart": 1000,
             "grantBalancesAtStart": {g["id"]: 1000}, "balanceAtEnd": 985,
             "grantBalancesAtEnd": {g["id"]: 985},
             "grantUsages": [{"grantId": g["id"], "usage": 15}]},
        ],
    }  # fmt: skip
    hour = ok(tc.get(ent.base + "/history", params={"windowSize": "HOUR"}))
    assert [(w["period"]["from"], w["usage"]) for w in hour["windowedHistory"]] == [
        ("2024-01-01T10:07:00Z", 15),
    ]
    assert hour["burndownHistory"] == day["burndownHistory"]
    same = {"windowSize": "DAY", "from": "2024-01-01T10:10:00Z", "to": "2024-01-01T10:10:00Z"}
    empty = ok(tc.get(ent.base + "/history", params=same))
    assert empty["windowedHistory"] == []
    assert [(b["period"], b["balanceAtStart"]) for b in empty["burndownHistory"]] == [
        ({"from": "2024-01-01T10:10:00Z", "to": "2024-01-01T10:10:00Z"}, 990),
    ]


def test_history_ending_on_a_reset_ends_with_the_post_reset_state(tc: httpx.Client) -> None:
    ent = Ent(tc, usagePeriod={"interval": "DAY"}, issueAfterReset=100)
    ent.event("2024-01-01T05:00:00Z", value=30)
    set_clock(tc, "2024-01-03T00:00:00Z")
    params = {"windowSize": "DAY", "from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}
    h = ok(tc.get(ent.base + "/history", params=params))
    assert [(b["period"]["from"], b["period"]["to"], b["balanceAtStart"], b["balanceAtEnd"])
            for b in h["burndownHistory"]] == [
        ("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", 100, 70),
        ("2024-01-02T00:00:00Z", "2024-01-02T00:00:00Z", 100, 100),  # rollover: refilled
        ("2024-01-02T00:00:00Z", "2024-01-02T00:00:00Z", 100, 100),  # the post-reset state
    ]  # fmt: skip
    assert ent.value("2024-01-02T00:00:00Z")["balance"] == 100


def test_history_at_a_grants_expiry_instant(tc: httpx.Client) -> None:
    """docs/engine.md's rule at a grant's end instant E, over HTTP: the segment that ends at E
    shows what the grant held just before (it expires unused), a run ending at E adds no
    segment, and every state at E — the value, the next segment and window — holds 0 for it."""
    ent = Ent(tc)
    short = ent.grant(100, priority=1, expiration={"duration": "HOUR", "count": 1})["id"]
    long = ent.grant(50, priority=2)["id"]
    ent.event("2024-01-01T00:10:00Z", value=30)
    set_clock(tc, "2024-01-01T03:00:00Z")
    e = "2024-01-01T01:00:00Z"  # the short grant's expiry
    to_e = {"windowSize": "HOUR", "from": CLOCK_START, "to": e}
    h = ok(tc.get(ent.base + "/history", params=to_e))
    [segment] = h["burndownHistory"]
    assert segment["period"] == {"from": CLOCK_START, "to": e}
    assert (segment["balanceAtStart"], segment["usage"], segment["balanceAtEnd"]) == (150, 30, 120)
    assert segment["grantBalancesAtEnd"] == {short: 70, long: 50}
    assert [(w["period"]["from"], w["usage"], w["balanceAtStart"])
            for w in h["windowedHistory"]] == [(CLOCK_START, 30, 150)]  # fmt: skip
    at_e = ent.value(e)
    assert (at_e["balance"], at_e["usage"]) == (50, 30)
    after = ok(tc.get(ent.base + "/history", params={**to_e, "to": "2024-01-01T02:00:00Z"}))
    first, second = after["burndownHistory"]
    assert first == segment
    assert second["period"] == {"from": e, "to": "2024-01-01T02:00:00Z"}
    assert second["grantBalancesAtStart"] == second["grantBalancesAtEnd"] == {long: 50}
    assert (second["balanceAtStart"], second["usage"]) == (50, 0)
    assert [(w["period"]["from"], w["usage"], w["balanceAtStart"])
            for w in after["windowedHistory"]] == [(CLOCK_START, 30, 150), (e, 0, 50)]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({}, "windowSize"),
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"windowSize": "HOUR", "windowTimeZone": "Mars/Olympus"}, "windowTimeZone"),
        ({"windowSize": "HOUR", "from": "2023-12-31T23:00:00Z"}, "from"),
        ({"windowSize": "HOUR", "from": "2024-01-01T02:00:00Z", "to": "2024-01-01T01:00:00Z"},
         "from"),
        ({"windowSize": "HOUR", "to": "noon"}, "to"),
    ],
)  # fmt: skip
def test_history_rejects(tc: httpx.Client, params: dict[str, Any], word: str) -> None:
    ent = Ent(tc)
    set_clock(tc, "2024-01-01T05:00:00Z")
    problem(tc.get(ent.base + "/history", params=params), 400, word)


def test_history_window_limit_at_n_and_n_plus_1(tc: httpx.Client) -> None:
    n = limits.HISTORY_WINDOWS_MAX
    ent = Ent(tc)
    set_clock(tc, "2024-02-01T00:00:00Z")
    start = "2024-01-01T00:00:00Z"
    end_n = f"2024-01-{1 + n // 1440:02d}T{n % 1440 // 60:02d}:{n % 60:02d}:00Z"
    h = ok(tc.get(ent.base + "/history", params={"windowSize": "MINUTE", "from": start,
                                                 "to": end_n}))  # fmt: skip
    assert len(h["windowedHistory"]) == n
    n1 = n + 1
    end_n1 = f"2024-01-{1 + n1 // 1440:02d}T{n1 % 1440 // 60:02d}:{n1 % 60:02d}:00Z"
    params = {"windowSize": "MINUTE", "from": start, "to": end_n1}
    problem(tc.get(ent.base + "/history", params=params), 400, "HISTORY_WINDOWS_MAX")


def test_history_needs_a_metered_entitlement(tc: httpx.Client) -> None:
    f = create_feature(tc)
    s = unique("s")
    e = ok(tc.post(f"/api/v1/subjects/{s}/entitlements",
                   json={"type": "boolean", "featureKey": f["key"]}), 201)  # fmt: skip
    path = f"/api/v1/subjects/{s}/entitlements/{e['id']}/history"
    problem(tc.get(path, params={"windowSize": "HOUR"}), 400, "metered")
    problem(tc.get(f"/api/v1/subjects/{s}/entitlements/{unique('x')}/history",
                   params={"windowSize": "HOUR"}), 404)  # fmt: skip


# ---------------------------------------------------------------- reset


def test_reset_starts_a_new_period(tc: httpx.Client) -> None:
    ent = Ent(tc, issueAfterReset=50)
    ent.grant(100, maxRolloverAmount=30)
    ent.event("2024-01-01T01:00:00Z", value=60)  # the expiring grant burns first
    set_clock(tc, "2024-01-10T00:00:30Z")
    assert ent.value()["balance"] == 90  # 40 + 50
    ok(tc.post(ent.base + "/reset", json={}), 204)
    got = ent.value()
    assert got["usage"] == 0
    assert got["balance"] == 80  # default grant refilled to 50, + min(30, 40) rolled over
    e = ok(tc.get(ent.base))
    assert e["lastReset"] == "2024-01-10T00:00:00Z"
    assert e["currentUsagePeriod"] == {"from": "2024-01-10T00:00:00Z",
                                       "to": "2024-02-10T00:00:00Z"}  # fmt: skip
    assert e["usagePeriod"]["anchor"] == "2024-01-01T00:00:00Z"  # input 0 is shown
    assert ent.value("2024-01-05T00:00:00Z")["usage"] == 60  # history is kept


def test_reset_retain_anchor(tc: httpx.Client) -> None:
    ent = Ent(tc)
    set_clock(tc, "2024-01-10T00:00:00Z")
    ok(tc.post(ent.base + "/reset", json={"retainAnchor": True}), 204)
    e = ok(tc.get(ent.base))
    assert e["currentUsagePeriod"] == {"from": "2024-01-10T00:00:00Z",
                                       "to": "2024-02-01T00:00:00Z"}  # fmt: skip


def test_reset_preserve_overage(tc: httpx.Client) -> None:
    ent = Ent(tc, issueAfterReset=100)
    ent.event("2024-01-01T01:00:00Z", value=130)
    set_clock(tc, "2024-01-02T00:00:00Z")
    ok(tc.post(ent.base + "/reset", json={"preserveOverage": True,
                                          "effectiveAt": "2024-01-01T12:00:00Z"}), 204)  # fmt: skip
    got = ent.value()
    assert got["balance"] == 70
    assert got["overage"] == 0
    other = Ent(tc, issueAfterReset=100)
    other.event("2024-01-02T00:00:00Z", value=130)
    set_clock(tc, "2024-01-03T00:00:00Z")
    ok(tc.post(other.base + "/reset", json={}), 204)
    assert other.value()["balance"] == 100  # overage forgiven by default


def test_reset_rejects(tc: httpx.Client) -> None:
    ent = Ent(tc, usagePeriod={"interval": "DAY"})
    set_clock(tc, "2024-01-03T10:00:00Z")
    problem(tc.post(ent.base + "/reset", json={"effectiveAt": "2024-01-03T10:01:00Z"}),
            400, "future")  # fmt: skip
    problem(tc.post(ent.base + "/reset", json={"effectiveAt": "2024-01-02T23:00:00Z"}),
            400, "period")  # fmt: skip
    problem(tc.post(ent.base + "/reset", json={"effectiveAt": "soon"}), 400, "effectiveAt")
    problem(tc.post(ent.base + "/reset", json={"retainAnchor": "yes"}), 400, "retainAnchor")
    ok(tc.post(ent.base + "/reset", json={"effectiveAt": "2024-01-03T09:00:00Z"}), 204)
    problem(tc.post(ent.base + "/reset", json={"effectiveAt": "2024-01-03T09:00:40Z"}),
            400, "last reset")  # fmt: skip
    assert ok(tc.get(ent.base))["lastReset"] == "2024-01-03T09:00:00Z"
    f = create_feature(tc)
    s = unique("s")
    b = ok(tc.post(f"/api/v1/subjects/{s}/entitlements",
                   json={"type": "boolean", "featureKey": f["key"]}), 201)  # fmt: skip
    problem(tc.post(f"/api/v1/subjects/{s}/entitlements/{b['id']}/reset", json={}), 400,
            "metered")  # fmt: skip
    problem(tc.post(f"/api/v1/subjects/{s}/entitlements/{unique('x')}/reset", json={}), 404)
