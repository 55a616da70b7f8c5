"""Recent notification events with their delivery status, and the ingest rate."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.console.support import START, console, ingest, ok, text_of


def test_notification_events_and_delivery_status(db_url: str) -> None:
    with console(db_url) as (_, client):
        ok(client.post("/api/v1/features", json={"key": "gen", "name": "Gen",
                                                 "meterSlug": "tokens"}), 201)  # fmt: skip
        channel = ok(
            client.post(
                "/api/v1/notification/channels",
                json={
                    "type": "WEBHOOK",
                    "name": "billing-hook",
                    "url": "https://93.184.216.34/hook",
                },
            ),
            201,
        )
        rule = ok(client.post("/api/v1/notification/rules", json={
            "type": "entitlements.balance.threshold", "name": "budget 80%",
            "channels": [channel["id"]], "features": ["gen"],
            "thresholds": [{"value": 80, "type": "PERCENT"}]}), 201)  # fmt: skip
        r = client.get("/console/notifications")
        assert "No notification events" in text_of(r.text)
        for _ in range(3):
            ok(client.post(f"/api/v1/notification/rules/{rule['id']}/test"), 201)
        r = client.get("/console/notifications")
        assert r.status_code == 200, r.text
        rows = re.findall(r'<tr data-event="([^"]+)">', r.text)
        assert len(rows) == 3
        words = text_of(r.text)
        assert "entitlements.balance.threshold" in words
        assert "budget 80%" in words
        assert "billing-hook · 0 attempts" in words  # no delivery thread in this test: pending
        assert 'data-state="PENDING"' in r.text
        assert "page 1 of 1 · 3 in all" in words
        r = client.get("/console/notifications?feature=other")
        assert "No notification events match" in text_of(r.text)


def test_ingest_rate(db_url: str) -> None:
    with console(db_url) as (c, client):
        now = START + timedelta(hours=5, seconds=30)
        c.clock.set(now)  # type: ignore[attr-defined]
        for minutes_ago, n in ((0, 2), (1, 3), (59, 1), (60, 4), (61, 5)):
            for _ in range(n):
                ingest(client, "call", "s", now - timedelta(minutes=minutes_ago))
        r = client.get("/console/ingest")
        assert r.status_code == 200, r.text
        bars = dict(re.findall(r'data-label="([^"]*)" data-value="([^"]*)"', r.text))
        assert len(bars) == 60  # 04:01 … 05:00, the current minute last
        assert (bars["05:00"], bars["04:59"], bars["04:01"], bars["04:30"]) == ("2", "3", "1", "0")
        assert "04:00" not in bars  # 60 minutes ago is outside the hour
        words = text_of(r.text)
        assert "Events, last 60 minutes 6" in words
        assert "Busiest minute 3" in words
        assert "Per minute on average 0.1" in words
        assert len(re.findall(r"<td><code>call</code></td>", r.text)) == 15  # latest events
