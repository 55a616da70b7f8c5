"""Notifications end to end: real server processes, a real receiver process that verifies
every webhook with the PyPI ``standardwebhooks`` library, fails deliveries on purpose, and is
stopped and restarted; the server SIGKILLed mid-delivery; two replicas on PostgreSQL.
Every expected event arrives verified, and none is counted twice by ``webhook-id``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify_support import (
    FAST_ENV,
    Receiver,
    channel,
    entitlement,
    feature,
    iso,
    set_clock,
    tokens,
    wait_for,
)
from tests.support import ServerProcess, unique

THRESHOLDS = [
    {"value": 50, "type": "PERCENT"},
    {"value": 90, "type": "usage_value"},
    {"value": 100, "type": "usage_percentage"},
]


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(**flags: float) -> Receiver:
        r = Receiver(tmp_path / f"received-{len(started)}.jsonl", **flags).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def _rule(c: httpx.Client, channel_id: str, feature_key: str, **over: Any) -> str:
    body = {
        "type": "entitlements.balance.threshold",
        "name": unique("rule"),
        "channels": [channel_id],
        "features": [feature_key],
        "thresholds": THRESHOLDS,
    }
    body.update(over)  # fmt: skip
    r = c.post("/api/v1/notification/rules", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _ten_tokens_cross_ten(c: httpx.Client, recv: Receiver, prefix: str) -> tuple[str, str]:
    """A channel to ``recv``, a rule "usage ≥ 10" on a new feature, and one subject's 10
    tokens that cross it; returns (channel id, rule id)."""
    ch = channel(c, recv.url)["id"]
    fkey = feature(c)
    rule = _rule(c, ch, fkey, thresholds=[{"value": 10, "type": "usage_value"}])
    s = unique(prefix)
    entitlement(c, s, fkey)
    tokens(c, s, [10])
    return ch, rule


def _events(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = c.get("/api/v1/notification/events", params={"pageSize": 1000, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_thresholds_and_resets_arrive_once_each_through_failures(
    make_server: Callable[..., ServerProcess], receivers: Callable[..., Receiver]
) -> None:
    recv = receivers(fail_first=2)
    server = make_server(env=FAST_ENV)
    with server.client() as c:
        ch = channel(c, recv.url)["id"]
        fkey = feature(c)
        rule = _rule(c, ch, fkey)
        reset_rule = _rule(c, ch, fkey, type="entitlements.reset", thresholds=None)  # silent
        small, big, voided = unique("small"), unique("big"), unique("void")
        entitlement(c, small, fkey)
        entitlement(c, big, fkey)
        entitlement(c, voided, fkey)
        g = c.post(f"/api/v1/subjects/{voided}/entitlements/{fkey}/grants",
                   json={"amount": 100, "priority": 10,
                         "effectiveAt": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime()),
                         "expiration": {"duration": "YEAR", "count": 1}})  # fmt: skip
        # priority 10 (the default grant's is 1): the 60 tokens burn the default grant, so the
        # void leaves 60 of 100 whether or not a minute boundary passes before it. With equal
        # priorities this grant (it expires, the default does not) would burn first, and a void
        # in the next minute (voids are minute-aligned) would leave 60 of 160: no 50 % crossing.
        assert g.status_code == 201, g.text
        for _ in range(10):  # many small events: 10, 20, … 100
            tokens(c, small, [10])
        tokens(c, big, [40, 30, 30])  # one batch straight to 100
        tokens(c, voided, [60])  # 60 of 200: nothing yet
        wait_for(lambda: len(recv.delivered()) >= 6, what="6 threshold webhooks")
        assert c.delete(f"/api/v1/grants/{g.json()['id']}").status_code == 204  # 60 of 100
        wait_for(lambda: len(recv.delivered()) >= 7, what="the voided grant's webhook")
        time.sleep(2.5)  # a sweep passes: nothing fires twice
        got = recv.delivered()
        assert len(got) == 7
        fired = sorted(
            (p["data"]["subject"]["key"], p["type"], (p["data"].get("threshold") or {}).get("type"))
            for p in got.values()
        )
        assert fired == sorted([
            (small, "entitlements.balance.threshold", "PERCENT"),
            (small, "entitlements.balance.threshold", "usage_value"),
            (small, "entitlements.balance.threshold", "usage_percentage"),
            (big, "entitlements.balance.threshold", "PERCENT"),
            (big, "entitlements.balance.threshold", "usage_value"),
            (big, "entitlements.balance.threshold", "usage_percentage"),
            (voided, "entitlements.balance.threshold", "PERCENT"),
        ])  # fmt: skip
        # the API shows every event delivered, with each attempt's status code and latency
        events = _events(c, rule=[rule, reset_rule])
        assert {e["id"] for e in events} == set(got)

        def all_delivered() -> bool:
            return all(
                e["deliveryStatus"][0]["state"] == "SUCCESS"
                for e in _events(c, rule=[rule, reset_rule])
            )

        wait_for(all_delivered, what="SUCCESS")
        attempts = [a for e in _events(c, rule=[rule]) for a in e["deliveryStatus"][0]["attempts"]]
        codes = sorted(a["response"]["statusCode"] for a in attempts)
        assert codes.count(500) == 2
        assert codes.count(200) == 7
        assert all(a["response"]["durationMs"] >= 0 for a in attempts)
        one = c.get(f"/api/v1/notification/events/{events[0]['id']}")
        assert one.status_code == 200
        assert one.json()["id"] == events[0]["id"]
        # resend: the same webhook-id again
        before = len(recv.lines())
        assert c.post(f"/api/v1/notification/events/{events[0]['id']}/resend",
                      json={}).status_code == 202  # fmt: skip
        wait_for(lambda: len(recv.lines()) > before, what="the resent webhook")
        assert recv.lines()[-1]["id"] == events[0]["id"]


def test_resets_fire_on_manual_and_automatic_resets_and_rearm_thresholds(
    make_server: Callable[..., ServerProcess], receivers: Callable[..., Receiver]
) -> None:
    recv = receivers()
    start = time.time()
    clock_env = {"ALLOTMENT_TEST_CLOCK": iso(start)}
    server = make_server(env={**FAST_ENV, **clock_env})
    with server.client() as c:
        ch = channel(c, recv.url)["id"]
        fkey = feature(c)
        _rule(c, ch, fkey, thresholds=[{"value": 50, "type": "usage_percentage"}])
        _rule(c, ch, fkey, type="entitlements.reset", thresholds=None)
        s = unique("reset")
        eid = entitlement(c, s, fkey)
        tokens(c, s, [60])
        wait_for(lambda: len(recv.delivered()) == 1, what="50 % in the first period")
        set_clock(c, start + 120)
        r = c.post(f"/api/v1/subjects/{s}/entitlements/{eid}/reset", json={})
        assert r.status_code == 204, r.text
        wait_for(lambda: len(recv.delivered()) == 2, what="the manual reset")
        tokens(c, s, [60])  # the new period: 50 % fires again
        wait_for(lambda: len(recv.delivered()) == 3, what="50 % after the reset")
        set_clock(c, start + 120 + 32 * 86400)  # past the period's end: an automatic reset
        wait_for(lambda: len(recv.delivered()) == 4, what="the automatic reset")
        time.sleep(2.5)
        kinds = [p["type"] for p in sorted(recv.delivered().values(), key=lambda p: p["id"])]
        assert kinds == ["entitlements.balance.threshold", "entitlements.reset",
                         "entitlements.balance.threshold", "entitlements.reset"]  # fmt: skip


def test_sigkill_mid_delivery_and_a_receiver_restart_lose_nothing(
    make_server: Callable[..., ServerProcess], receivers: Callable[..., Receiver], backend: str
) -> None:
    env = {**FAST_ENV, "ALLOTMENT_WEBHOOK_TIMEOUT": "4", "ALLOTMENT_WEBHOOK_LEASE": "5"}
    recv = receivers(hold_first=3)
    server = make_server(env=env)
    with server.client() as c:
        ch = channel(c, recv.url)["id"]
        fkey = feature(c)
        _rule(c, ch, fkey, thresholds=[{"value": 10, "type": "usage_value"}])
        subjects = [unique("k") for _ in range(3)]
        for s in subjects:
            entitlement(c, s, fkey)
        for s in subjects:
            tokens(c, s, [10])
        wait_for(lambda: len(recv.lines()) >= 1, what="the first (held) delivery")
    server.kill()  # mid-delivery: the receiver still holds the first request
    recv.stop()  # and the receiver goes away too
    server.start()  # same database
    time.sleep(1.0)  # the restarted server retries against a closed port meanwhile
    recv.start(hold_first=0)
    wait_for(lambda: len(recv.delivered()) == len(subjects), what="every event after restart")
    got = recv.delivered()
    assert sorted(p["data"]["subject"]["key"] for p in got.values()) == sorted(subjects)
    ids = [x["id"] for x in recv.lines()]
    assert set(ids) == set(got)  # repeats (the killed delivery) carry the same webhook-id
    time.sleep(2.5)  # a sweep and a few delivery passes later: nothing more is sent
    sends = Counter(x["id"] for x in recv.lines())
    assert sorted(sends) == sorted(got)
    assert max(sends.values()) <= 3, sends  # "at most a few times": the held one, then one
    assert sum(sends.values()) <= 2 * len(subjects), sends


def test_failed_after_the_last_attempt_then_resent_with_the_same_id(
    make_server: Callable[..., ServerProcess], receivers: Callable[..., Receiver]
) -> None:
    recv = receivers(fail_first=1000)  # refuses everything
    env = {**FAST_ENV, "ALLOTMENT_WEBHOOK_RETRY_SCHEDULE": "0.2s,0.2s"}  # 3 attempts in all
    server = make_server(env=env)
    with server.client() as c:
        ch, rule = _ten_tokens_cross_ten(c, recv, "fail")

        def state() -> str:
            events = _events(c, rule=[rule])
            return str(events[0]["deliveryStatus"][0]["state"]) if events else ""

        wait_for(lambda: state() == "FAILED", what="FAILED after the last attempt")
        (event,) = _events(c, rule=[rule])
        status = event["deliveryStatus"][0]
        assert "nextAttempt" not in status
        assert [a["response"]["statusCode"] for a in status["attempts"]] == [500, 500, 500]
        assert "3 attempt" in status["reason"]
        time.sleep(1.0)
        assert len(recv.lines()) == 3  # no attempt after the last one
        recv.stop()
        recv.start(fail_first=0)  # the receiver is fixed; the operator resends
        assert c.post(f"/api/v1/notification/events/{event['id']}/resend",
                      json={"channels": [ch]}).status_code == 202  # fmt: skip
        wait_for(lambda: state() == "SUCCESS", what="SUCCESS after the resend")
        assert list(recv.delivered()) == [event["id"]]
        assert {x["id"] for x in recv.lines()} == {event["id"]}


def test_a_resend_during_an_attempt_in_flight_sends_again(
    make_server: Callable[..., ServerProcess], receivers: Callable[..., Receiver]
) -> None:
    recv = receivers(hold_first=2)
    server = make_server(env=FAST_ENV)
    with server.client() as c:
        _, rule = _ten_tokens_cross_ten(c, recv, "inflight")
        wait_for(lambda: len(recv.lines()) == 1, what="the first (held) attempt")
        (event,) = _events(c, rule=[rule])
        assert event["deliveryStatus"][0]["state"] == "SENDING"
        r = c.post(f"/api/v1/notification/events/{event['id']}/resend", json={})
        assert r.status_code == 202
        wait_for(lambda: len(recv.lines()) == 2, what="the resend after the attempt")
        assert [x["id"] for x in recv.lines()] == [event["id"], event["id"]]
