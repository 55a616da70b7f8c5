"""Two server replicas on one PostgreSQL database deliver the notification outbox together:
every event reaches the receiver (which verifies it with ``standardwebhooks``) exactly once,
because each delivery is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify_support import FAST_ENV, Receiver, channel, entitlement, feature, tokens, wait_for
from tests.support import ServerProcess, unique

pytestmark = pytest.mark.slow


@pytest.fixture
def recv(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path / "received.jsonl").start()
    yield r
    r.stop()


def _events(c: httpx.Client) -> list[dict[str, Any]]:
    r = c.get("/api/v1/notification/events", params={"pageSize": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_two_replicas_deliver_each_event_once(
    make_server: Callable[..., ServerProcess], recv: Receiver, pg_db_url: str
) -> None:
    a = make_server(db_url=pg_db_url, env=FAST_ENV)
    b = make_server(db_url=pg_db_url, env=FAST_ENV)
    with a.client() as ca, b.client() as cb:
        ch = channel(ca, recv.url)["id"]
        fkey = feature(ca)
        r = ca.post(
            "/api/v1/notification/rules",
            json={
                "type": "entitlements.balance.threshold",
                "name": "two",
                "channels": [ch],
                "features": [fkey],
                "thresholds": [
                    {"value": 10, "type": "usage_value"},
                    {"value": 20, "type": "usage_value"},
                ],
            },
        )
        assert r.status_code == 201, r.text  # fmt: skip
        subjects = [unique("r") for _ in range(8)]
        for s in subjects:
            entitlement(ca, s, fkey)
        for i, s in enumerate(subjects):  # each subject's usage arrives through both replicas
            tokens(ca if i % 2 else cb, s, [10])
            tokens(cb if i % 2 else ca, s, [10])
        wait_for(lambda: len(recv.delivered()) >= 2 * len(subjects), what="16 webhooks")
        time.sleep(2.5)  # both replicas sweep: nothing more
        lines = recv.lines()
        assert len(lines) == 2 * len(subjects)  # no event sent twice, by either replica
        assert len({x["id"] for x in lines}) == len(lines)
        events = _events(cb)
        mine = [e for e in events if e["payload"]["data"]["subject"]["key"] in subjects]
        assert len(mine) == 2 * len(subjects)
        assert all(len(e["deliveryStatus"][0]["attempts"]) == 1 for e in mine)
