"""Helpers for the notification tests: the receiver process and API set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from allotment.config import Settings
from allotment.container import Container
from tests.support import ROOT, free_port, unique

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# webhook delivery that retries fast (tests run in seconds, not hours)
FAST_ENV = {
    "ALLOTMENT_WEBHOOK_ALLOW_PRIVATE": "1",
    "ALLOTMENT_WEBHOOK_RETRY_SCHEDULE": ",".join(["0.3s"] * 30),
    "ALLOTMENT_NOTIFICATIONS_SWEEP_INTERVAL": "2",
}


class Receiver:
    def __init__(self, log: Path, port: int | None = None, **flags: float) -> None:
        self.log = log
        self.port = port or free_port()
        self.flags = flags
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self, **flags: float) -> Receiver:
        args = [
            sys.executable,
            "-m",
            "tests.notify_receiver",
            str(self.port),
            SECRET,
            str(self.log),
        ]
        for k, v in {**self.flags, **flags}.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, env=os.environ.copy())
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"ready"
        self.proc.stdout.close()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]

    def delivered(self) -> dict[str, dict[str, Any]]:
        """Verified, acknowledged deliveries by webhook-id (a repeat counts once)."""
        out: dict[str, dict[str, Any]] = {}
        for x in self.lines():
            assert x["verified"], x
            if x["status"] == 200:
                out.setdefault(x["id"], x["payload"])
        return out


def wait_for(check: Callable[[], bool], timeout: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def channel(c: httpx.Client, url: str, **over: Any) -> dict[str, Any]:
    r = c.post("/api/v1/notification/channels",
               json={"type": "WEBHOOK", "name": unique("ch"), "url": url, "signingSecret": SECRET,
                     **over})  # fmt: skip
    assert r.status_code == 201, r.text
    return dict(r.json())


def feature(c: httpx.Client) -> str:
    key = unique("f")
    r = c.post("/api/v1/features", json={"key": key, "name": key, "meterSlug": "tokens_total"})
    assert r.status_code == 201, r.text
    return key


def entitlement(c: httpx.Client, subject: str, feature_key: str, grants: int = 100) -> str:
    r = c.post(f"/api/v1/subjects/{subject}/entitlements",
               json={"type": "metered", "featureKey": feature_key,
                     "usagePeriod": {"interval": "MONTH"}, "issueAfterReset": grants})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def tokens(c: httpx.Client, subject: str, amounts: list[int]) -> None:
    events = [{"specversion": "1.0", "id": unique("e"), "source": "notify-test", "type": "prompt",
               "subject": subject, "data": {"tokens": a, "model": "m", "type": "in"}}
              for a in amounts]  # fmt: skip
    r = c.post("/api/v1/events", content=json.dumps(events),
               headers={"content-type": "application/cloudevents-batch+json"})  # fmt: skip
    assert r.status_code == 204, r.text


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def set_clock(c: httpx.Client, at: float) -> None:
    """Move a test-clock server (``ALLOTMENT_TEST_CLOCK``) to ``at`` (epoch seconds)."""
    r = c.put("/api/_testing/clock", json={"now": iso(at)})
    assert r.status_code == 200, r.text


@contextmanager
def notify_container(settings: Settings, at: datetime) -> Iterator[Container]:
    """A started in-process container with webhooks to private addresses allowed, the wire
    payloads installed and a clock frozen at ``at``; no background workers, so nothing
    evaluates or delivers unless the test says so."""
    from allotment.clock import FrozenClock
    from allotment.container import build_container
    from allotment.http.routes.notifications import render_payload

    container = build_container(replace(settings, webhook_allow_private=True), FrozenClock(at))
    container.start()
    container.notifications.render = render_payload
    try:
        yield container
    finally:
        container.close()
