"""@openmeter/sdk@1.0.0-beta.185: notification.channels / rules / events against a real server
that delivers the webhooks to a real receiver process (verified with ``standardwebhooks``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.sdk import UNDEFINED, assert_problem, assert_time, assert_ulid, run_scenario
from tests.notify_support import FAST_ENV, SECRET, Receiver, entitlement, feature, tokens, wait_for
from tests.support import ServerProcess, unique


@pytest.fixture
def recv(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path / "received.jsonl").start()
    yield r
    r.stop()


def _channel(got: dict[str, Any], name: str, url: str, **extra: Any) -> None:
    assert_ulid(got["id"])
    assert_time(got["createdAt"])
    assert_time(got["updatedAt"])
    rest = {k: v for k, v in got.items() if k not in {"id", "createdAt", "updatedAt"}}
    assert rest == {"type": "WEBHOOK", "name": name, "url": url, "disabled": False, **extra}


def test_notifications_through_the_sdk(
    sdk: None, make_server: Callable[..., ServerProcess], recv: Receiver
) -> None:
    server = make_server(env=FAST_ENV)
    with server.client() as c:
        fkey = feature(c)
        subject = unique("sdk")
        entitlement(c, subject, fkey)
    names = {"channelName": unique("ch"), "ruleName": unique("rule")}
    out = run_scenario(
        "notifications", server.url,
        {"url": recv.url, "secret": SECRET, "feature": fkey, **names},
    )  # fmt: skip
    ch = out["channelCreate"]
    _channel(ch, names["channelName"], recv.url, customHeaders={"X-Team": "billing"},
             signingSecret=SECRET)  # fmt: skip
    generated = out["channelGenerated"]
    assert generated["disabled"] is True
    assert generated["signingSecret"].startswith("whsec_")
    assert out["channelGet"] == ch
    assert out["channelList"]["items"] == [ch]  # the disabled one is hidden by default
    assert out["channelList"]["totalCount"] == 1
    rule = out["ruleCreate"]
    assert_ulid(rule["id"])
    assert rule["type"] == "entitlements.balance.threshold"
    assert rule["name"] == names["ruleName"]
    assert rule["disabled"] is False
    assert rule["thresholds"] == [
        {"value": 50, "type": "PERCENT"},
        {"value": 100, "type": "NUMBER"},
    ]
    assert [x["id"] for x in rule["channels"]] == [ch["id"]]
    assert [x["key"] for x in rule["features"]] == [fkey]
    assert out["ruleGet"] == rule
    assert out["ruleList"]["items"] == [rule]
    assert_problem(out["ruleBad"], 400, "thresholds")
    assert_problem(out["channelMissing"], 404)

    with server.client() as c:
        tokens(c, subject, [60, 60])  # 120 of 100: both thresholds
    wait_for(lambda: len(recv.delivered()) == 2, what="two verified webhooks")
    ev = run_scenario("notifications", server.url, {"rule": rule["id"]}, step="events")
    items = ev["eventList"]["items"]
    assert len(items) == 2
    assert {i["id"] for i in items} == set(recv.delivered())
    got = ev["eventGet"]
    assert got["id"] == items[0]["id"]
    assert got["rule"]["id"] == rule["id"]
    assert got["payload"]["data"]["subject"]["key"] == subject
    assert got["payload"]["data"]["feature"]["key"] == fkey
    assert got["deliveryStatus"][0]["channel"]["id"] == ch["id"]

    done = run_scenario("notifications", server.url, {"rule": rule["id"], "channel": ch["id"]},
                        step="cleanup")  # fmt: skip
    assert done["ruleDelete"] == UNDEFINED
    assert done["channelDelete"] == UNDEFINED
    assert_time(done["ruleGetDeleted"]["deletedAt"])
    assert done["channelListAfter"]["items"] == []
