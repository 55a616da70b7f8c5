"""Notification channels and rules over HTTP: OpenMeter's shapes, the generated secret,
validation that names the field and changes nothing, and the outbound address policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support import ServerProcess, unique

PUBLIC_URL = "https://93.184.216.34/hook"
"""A literal public address (no DNS in the tests). Channels with it never get an event here:
these tests create no entitlement a rule could fire for."""


def _channel(c: httpx.Client, **over: Any) -> httpx.Response:
    body = {"type": "WEBHOOK", "name": unique("ch"), "url": PUBLIC_URL, **over}
    return c.post("/api/v1/notification/channels", json=body)


def _problem(r: httpx.Response, status: int, field_text: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field_text in r.json()["detail"]


def test_channel_crud_and_generated_secret(client: httpx.Client) -> None:
    r = _channel(client, customHeaders={"x-team": "billing"}, metadata={"a": "b"})
    assert r.status_code == 201, r.text
    ch = r.json()
    assert ch["type"] == "WEBHOOK"
    assert ch["disabled"] is False
    assert ch["signingSecret"].startswith("whsec_")
    assert 32 <= len(ch["signingSecret"].removeprefix("whsec_")) <= 100
    assert ch["customHeaders"] == {"x-team": "billing"}
    got = client.get(f"/api/v1/notification/channels/{ch['id']}")
    assert got.json() == ch
    upd = client.put(
        f"/api/v1/notification/channels/{ch['id']}",
        json={"type": "WEBHOOK", "name": "renamed", "url": PUBLIC_URL, "disabled": True},
    )
    assert upd.status_code == 200, upd.text
    assert upd.json()["name"] == "renamed"
    assert upd.json()["signingSecret"] == ch["signingSecret"]  # kept when not sent
    listed = client.get("/api/v1/notification/channels", params={"pageSize": 1000}).json()
    assert ch["id"] not in [x["id"] for x in listed["items"]]  # disabled: hidden by default
    listed = client.get(
        "/api/v1/notification/channels", params={"includeDisabled": "true", "pageSize": 1000}
    ).json()
    assert ch["id"] in [x["id"] for x in listed["items"]]
    assert {"totalCount", "page", "pageSize", "items"} <= set(listed)
    assert client.delete(f"/api/v1/notification/channels/{ch['id']}").status_code == 204
    assert client.get(f"/api/v1/notification/channels/{ch['id']}").json()["deletedAt"]
    assert client.delete(f"/api/v1/notification/channels/{ch['id']}").status_code == 404


def test_channel_validation_names_the_field(client: httpx.Client) -> None:
    before = client.get("/api/v1/notification/channels", params={"includeDisabled": "true"})
    _problem(_channel(client, url="ftp://example.com/x"), 400, "url")
    _problem(_channel(client, url="http://127.0.0.1:9/hook"), 400, "loopback")
    _problem(_channel(client, url="http://10.0.0.7/hook"), 400, "private")
    _problem(_channel(client, url="http://169.254.169.254/latest"), 400, "url")
    _problem(_channel(client, signingSecret="tooshort"), 400, "signingSecret")
    _problem(_channel(client, type="EMAIL"), 400, "type")
    _problem(_channel(client, name=""), 400, "name")
    after = client.get("/api/v1/notification/channels", params={"includeDisabled": "true"})
    assert after.json()["totalCount"] == before.json()["totalCount"]  # nothing was created
    _problem(client.get("/api/v1/notification/channels/not-a-ulid"), 400, "channelId")
    r = client.get("/api/v1/notification/channels/01J2KNP1YTXQRXHTDJ4KPR7PZ0")
    assert r.status_code == 404


def _feature(c: httpx.Client) -> str:
    key = unique("f")
    assert c.post("/api/v1/features", json={"key": key, "name": key}).status_code == 201
    return key


def test_rule_crud_with_every_threshold_type(client: httpx.Client) -> None:
    ch = _channel(client, disabled=True).json()["id"]  # a shared server: nothing is sent
    fkey = _feature(client)
    thresholds = [
        {"value": 80, "type": "PERCENT"},
        {"value": 1000, "type": "NUMBER"},
        {"value": 10, "type": "balance_value"},
        {"value": 95.5, "type": "usage_percentage"},
        {"value": 2000, "type": "usage_value"},
    ]
    body = {"type": "entitlements.balance.threshold", "name": "budget", "channels": [ch],
            "features": [fkey], "thresholds": thresholds}  # fmt: skip
    r = client.post("/api/v1/notification/rules", json=body)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["thresholds"] == thresholds
    assert rule["channels"][0]["id"] == ch
    assert rule["features"][0]["key"] == fkey
    assert client.get(f"/api/v1/notification/rules/{rule['id']}").json() == rule
    listed = client.get("/api/v1/notification/rules", params={"feature": fkey}).json()
    assert [x["id"] for x in listed["items"]] == [rule["id"]]
    listed = client.get("/api/v1/notification/rules", params={"channel": ch}).json()
    assert [x["id"] for x in listed["items"]] == [rule["id"]]
    upd = client.put(f"/api/v1/notification/rules/{rule['id']}",
                     json={**body, "thresholds": thresholds[:1], "name": "b2"})  # fmt: skip
    assert upd.status_code == 200, upd.text
    assert upd.json()["thresholds"] == thresholds[:1]
    reset = client.post(
        "/api/v1/notification/rules",
        json={"type": "entitlements.reset", "name": "r", "channels": [ch]},
    )
    assert reset.status_code == 201, reset.text
    assert "thresholds" not in reset.json()
    assert "features" not in reset.json()
    # a channel in use cannot be deleted; the rule first
    _problem(client.delete(f"/api/v1/notification/channels/{ch}"), 400, "used by")
    for rid in (rule["id"], reset.json()["id"]):
        assert client.delete(f"/api/v1/notification/rules/{rid}").status_code == 204
    assert client.get(f"/api/v1/notification/rules/{rule['id']}").json()["deletedAt"]
    assert client.delete(f"/api/v1/notification/channels/{ch}").status_code == 204


def test_rule_validation_names_the_field(client: httpx.Client) -> None:
    # rules on a shared server: scoped to a feature of their own, on a disabled channel
    ch = _channel(client, disabled=True).json()["id"]
    base = {
        "type": "entitlements.balance.threshold",
        "name": "x",
        "channels": [ch],
        "features": [_feature(client)],
        "thresholds": [{"value": 50, "type": "PERCENT"}],
    }
    ten = [{"value": i + 1, "type": "usage_value"} for i in range(10)]
    ok = client.post("/api/v1/notification/rules", json={**base, "thresholds": ten})
    assert ok.status_code == 201, ok.text
    eleven = [*ten, {"value": 99, "type": "usage_value"}]
    _problem(client.post("/api/v1/notification/rules", json={**base, "thresholds": eleven}),
             400, "thresholds")  # fmt: skip
    _problem(client.post("/api/v1/notification/rules",
                         json={**base, "channels": ["01J2KNP1YTXQRXHTDJ4KPR7PZ0"]}),
             400, "channels")  # fmt: skip
    _problem(client.post("/api/v1/notification/rules", json={**base, "features": [unique("nf")]}),
             400, "features")  # fmt: skip
    _problem(client.post("/api/v1/notification/rules", json={**base, "type": "invoice.created"}),
             400, "type")  # fmt: skip
    _problem(client.put(f"/api/v1/notification/rules/{ok.json()['id']}",
                        json={**base, "type": "entitlements.reset"}), 400, "type")  # fmt: skip
    assert client.delete(f"/api/v1/notification/rules/{ok.json()['id']}").status_code == 204


def test_rule_test_call_and_events_listing(make_server: Callable[..., ServerProcess]) -> None:
    # a receiver that is never there (a closed local port): no traffic leaves the machine
    server = make_server(env={"ALLOTMENT_WEBHOOK_ALLOW_PRIVATE": "1"})
    with server.client() as client:
        _test_call(client)


def _test_call(client: httpx.Client) -> None:
    ch = _channel(client, url="http://127.0.0.1:9/hook").json()["id"]
    rule = client.post(
        "/api/v1/notification/rules",
        json={
            "type": "entitlements.balance.threshold",
            "name": "t",
            "channels": [ch],
            "thresholds": [{"value": 1, "type": "NUMBER"}],
        },
    )
    assert rule.status_code == 201, rule.text  # fmt: skip
    r = client.post(f"/api/v1/notification/rules/{rule.json()['id']}/test")
    assert r.status_code == 201, r.text
    ev = r.json()
    assert ev["type"] == "entitlements.balance.threshold"
    assert ev["payload"]["id"] == ev["id"]
    assert ev["payload"]["data"]["threshold"] == {"value": 1, "type": "NUMBER"}
    assert ev["deliveryStatus"][0]["channel"]["id"] == ch
    assert ev["deliveryStatus"][0]["state"] in ("PENDING", "SENDING", "FAILED")
    listed = client.get("/api/v1/notification/events", params={"rule": rule.json()["id"]})
    assert [x["id"] for x in listed.json()["items"]] == [ev["id"]]
    assert client.get(f"/api/v1/notification/events/{ev['id']}").status_code == 200
    assert client.post(f"/api/v1/notification/events/{ev['id']}/resend").status_code == 202
    _problem(
        client.post(
            f"/api/v1/notification/events/{ev['id']}/resend",
            json={"channels": ["01J2KNP1YTXQRXHTDJ4KPR7PZ0"]},
        ),
        400,
        "channels",
    )
    assert client.get("/api/v1/notification/events/01J2KNP1YTXQRXHTDJ4KPR7PZ0").status_code == 404
