"""Notifications on customer-owned entitlements, end to end: a real server process delivering
to a real receiver process (``tests/notify_receiver.py``, every request verified with the PyPI
``standardwebhooks`` library). A customer's usage is its key's and its subject keys' events, so
usage arriving on a subject key must cross the customer's thresholds; its grant and reset
writes are seen too; the payload carries the customer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify_support import (
    FAST_ENV,
    Receiver,
    channel,
    feature,
    iso,
    set_clock,
    tokens,
    wait_for,
)
from tests.support import ServerProcess, unique


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path / "received.jsonl").start()
    yield r
    r.stop()


def _rule(c: httpx.Client, channel_id: str, feature_key: str, **over: Any) -> str:
    body: dict[str, Any] = {
        "type": "entitlements.balance.threshold", "name": unique("rule"),
        "channels": [channel_id], "features": [feature_key],
        "thresholds": [{"value": 10, "type": "usage_value"},
                       {"value": 50, "type": "usage_percentage"}],
        **over,
    }  # fmt: skip
    r = c.post("/api/v1/notification/rules", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _by_threshold(got: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        (p["data"].get("threshold") or {}).get("type", p["type"]): p["data"] for p in got.values()
    }


def test_a_threshold_fires_for_a_customer_when_usage_arrives_on_a_subject_key(
    make_server: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    start = time.time()
    server = make_server(env={**FAST_ENV, "ALLOTMENT_TEST_CLOCK": iso(start)})
    with server.client() as c:
        ch = channel(c, receiver.url)["id"]
        fkey = feature(c)
        threshold_rule = _rule(c, ch, fkey)
        reset_rule = _rule(c, ch, fkey, type="entitlements.reset", thresholds=None)
        key, s1, s2 = unique("acme"), unique("s1"), unique("s2")
        attribution = {"subjectKeys": [s1, s2]}
        r = c.post(
            "/api/v1/customers", json={"name": "ACME", "key": key, "usageAttribution": attribution}
        )
        assert r.status_code == 201, r.text
        customer = r.json()
        r = c.post(f"/api/v2/customers/{key}/entitlements", json={
            "type": "metered", "featureKey": fkey, "usagePeriod": {"interval": "MONTH"},
            "issue": {"amount": 100},
            "grants": [{"amount": 150, "effectiveAt": iso(start // 60 * 60)}],
        })  # fmt: skip
        assert r.status_code == 201, r.text
        ent = r.json()
        base = f"/api/v2/customers/{customer['id']}/entitlements/{ent['id']}"

        tokens(c, s2, [6])  # 6 of 250: nothing
        tokens(c, s1, [5])  # the customer's usage is 11: "usage ≥ 10" crosses
        wait_for(lambda: len(receiver.delivered()) >= 1, what="the usage_value webhook")
        data = _by_threshold(receiver.delivered())["usage_value"]
        assert data["customer"]["id"] == customer["id"]
        assert data["customer"]["key"] == key
        assert data["customer"]["usageAttribution"] == {"subjectKeys": [s1, s2]}
        assert data["subject"]["key"] == key  # the customer's first usage subject: its key
        assert data["entitlement"]["id"] == ent["id"]
        assert data["entitlement"]["subjectKey"] == key
        assert data["feature"]["key"] == fkey
        assert data["value"]["usage"] == 11
        assert data["value"]["balance"] == 239

        tokens(c, s2, [49])  # 60 of 250 (24 %): no percentage webhook yet
        time.sleep(2.5)  # a sweep passes
        assert len(receiver.delivered()) == 1
        grants = c.get(f"{base}/grants").json()["items"]
        extra = next(g for g in grants if g["amount"] == 150)
        assert c.delete(f"/api/v1/grants/{extra['id']}").status_code == 204  # 60 of 100
        wait_for(lambda: len(receiver.delivered()) >= 2, what="the percentage webhook")
        data = _by_threshold(receiver.delivered())["usage_percentage"]
        assert data["customer"]["id"] == customer["id"]
        assert data["value"]["usage"] == 60

        set_clock(c, start + 120)
        r = c.post(f"{base}/reset", json={})
        assert r.status_code == 204, r.text
        wait_for(lambda: len(receiver.delivered()) >= 3, what="the reset webhook")
        data = _by_threshold(receiver.delivered())["entitlements.reset"]
        assert data["customer"]["id"] == customer["id"]
        assert data["value"]["usage"] == 0
        time.sleep(2.5)  # a sweep passes: nothing fires twice
        assert len(receiver.delivered()) == 3

        # the events API lists them under the subject they name and the rule
        r = c.get("/api/v1/notification/events", params={"subject": key, "pageSize": 100})
        assert r.status_code == 200, r.text
        assert {e["rule"]["id"] for e in r.json()["items"]} == {threshold_rule, reset_rule}
        assert all(e["payload"]["data"]["customer"]["id"] == customer["id"]
                   for e in r.json()["items"])  # fmt: skip
