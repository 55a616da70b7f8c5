"""Webhook delivery: a background worker of the serve process that sends the outbox.

Each pass claims due deliveries (``notifications_outbox.claim_due``: a lease, and on
PostgreSQL ``FOR UPDATE SKIP LOCKED``, so one replica at a time sends a delivery), sends them
signed the Standard Webhooks way, and records every attempt (status code, latency, a bounded
piece of the response body) with the delivery's next state:

* a 2xx answer: ``SUCCESS``;
* anything else (other status, timeout, refused address, connection error): the next retry
  after ``retry_schedule[n]`` seconds ±10 % jitter, or ``FAILED`` after the last one
  (``POST /api/v1/notification/events/{id}/resend`` queues it again).

A sender that dies mid-delivery leaves its lease behind; when the lease runs out the row is
claimed again and sent again with the same ``webhook-id`` (the event id), so a receiver that
drops repeated ids sees each event once. Outbound requests: http(s) only, no redirects
followed, ``timeout_seconds`` per request, and the address policy of
:class:`~allotment.services.notifications.OutboundPolicy` checked before every attempt.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from allotment import __version__
from allotment.clock import Clock, SystemClock
from allotment.domain.ids import new_ulid
from allotment.domain.notifications import (
    DEFAULT_RETRY_SCHEDULE,
    DeliveryState,
    retry_delay,
    sign,
)
from allotment.domain.timeutil import to_micros
from allotment.services.outbound import OutboundPolicy
from allotment.storage import notification_outbox as outbox
from allotment.storage import notifications_repo as repo
from allotment.storage.database import Database
from allotment.storage.notification_outbox import AttemptRecord, Claimed

log = logging.getLogger("allotment.webhooks")

RESPONSE_BODY_MAX = 1024
"""Characters of a receiver's answer kept with each attempt."""


@dataclass(frozen=True)
class DeliverySettings:
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    timeout_seconds: float = 10.0
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    senders: int = 4
    batch: int = 4
    """Deliveries claimed per pass (= senders: a pass lasts at most one timeout, so a
    shutdown waits for it)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int | None
    body: str
    duration_ms: int
    error: str | None = None


def post(url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Response:
    """One POST with ``http.client`` (no redirects, no proxies, bounded time)."""
    parts = urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    started = time.monotonic()
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=dict(headers))
        answer = conn.getresponse()
        text = answer.read(RESPONSE_BODY_MAX * 4).decode("utf-8", "replace")[:RESPONSE_BODY_MAX]
        return Response(answer.status, text, round((time.monotonic() - started) * 1000))
    except (OSError, http.client.HTTPException) as exc:
        return Response(
            None, "", round((time.monotonic() - started) * 1000), f"{type(exc).__name__}: {exc}"
        )
    finally:
        conn.close()


class WebhookDelivery:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        policy: OutboundPolicy,
        settings: DeliverySettings | None = None,
        send: Callable[[str, Mapping[str, str], bytes, float], Response] | None = None,
        signing_clock: Clock | None = None,
    ) -> None:
        """``signing_clock`` stamps ``webhook-timestamp``: receivers check it against their own
        wall clock (±5 min in the Standard Webhooks libraries), so it stays the system clock
        even when the service runs on a test clock; ``clock`` schedules attempts."""
        self._db = db
        self._clock = clock
        self._policy = policy
        self.settings = settings or DeliverySettings()
        self._send = send or post
        self._signing_clock = signing_clock or SystemClock()
        self.owner = new_ulid(to_micros(clock.now()) // 1000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._rand = random.Random()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._pool = ThreadPoolExecutor(self.settings.senders, "allotment-webhook")
            self._thread = threading.Thread(
                target=self._run, name="allotment-webhook-delivery", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:  # keep delivering; the lease makes this safe
                log.exception("webhook delivery pass failed")
                busy = False
            if not busy:
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    def run_once(self) -> int:
        """Claim and send the due deliveries; returns how many were attempted."""
        now = self._now()
        with self._db.read() as tx:  # a read first: an idle outbox never takes the write lock
            due = outbox.next_due(tx)
        if due is None or due > now:
            return 0
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        with self._db.write() as tx:
            claimed = outbox.claim_due(tx, now, lease, self.owner, self.settings.batch)
        if not claimed:
            return 0
        if self._pool is None or len(claimed) == 1:
            for c in claimed:
                self.deliver(c)
        else:
            list(self._pool.map(self.deliver, claimed))
        return len(claimed)

    def deliver(self, c: Claimed) -> None:
        with self._db.read() as tx:
            event = repo.event(tx, c.event_id)
            channel = repo.channel(tx, c.channel_id)
        if event is None:
            return
        now = self._now()
        if channel is None or channel.deleted_at is not None or channel.disabled:
            why = "channel deleted" if channel is None or channel.deleted_at else "channel disabled"
            self._finish(c, AttemptRecord(0, DeliveryState.FAILED, None, 0, why,
                                          channel.url if channel else "", now),
                         DeliveryState.FAILED, why, None)  # fmt: skip
            return
        body = event.payload.encode()
        refusal = self._policy.refusal(channel.url)
        if refusal is not None:
            answer = Response(None, "", 0, f"refused: {refusal}")
        else:
            timestamp = int(self._signing_clock.now().timestamp())
            headers = {
                **channel.custom_headers,
                "content-type": "application/json",
                "user-agent": f"allotment/{__version__}",
                "webhook-id": event.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(channel.signing_secret, event.id, timestamp, body),
            }
            answer = self._send(channel.url, headers, body, self.settings.timeout_seconds)
        done = self._now()
        ok = answer.status is not None and 200 <= answer.status < 300
        attempt = AttemptRecord(
            0, DeliveryState.SUCCESS if ok else DeliveryState.FAILED, answer.status,
            answer.duration_ms, answer.body if answer.error is None else answer.error,
            channel.url, done,
        )  # fmt: skip
        if ok:
            self._finish(c, attempt, DeliveryState.SUCCESS, f"delivered ({answer.status})", None)
            return
        what = f"HTTP {answer.status}" if answer.status is not None else (answer.error or "error")
        delay = retry_delay(
            self.settings.retry_schedule, c.attempts_made + 1, self._rand.uniform(-1.0, 1.0)
        )
        if delay is None:
            reason = f"failed after {c.attempts_made + 1} attempt(s); last: {what}"
            self._finish(c, attempt, DeliveryState.FAILED, reason, None)
        else:
            self._finish(
                c, attempt, DeliveryState.PENDING, f"attempt {c.attempts_made + 1} failed: {what}",
                done + timedelta(seconds=delay),
            )  # fmt: skip

    def _finish(
        self,
        c: Claimed,
        attempt: AttemptRecord,
        state: DeliveryState,
        reason: str,
        next_at: datetime | None,
    ) -> None:
        with self._db.write() as tx:
            kept = outbox.record_attempt(
                tx, c, self.owner, attempt, state=state, reason=reason[:1000],
                next_attempt_at=next_at,
            )  # fmt: skip
        if not kept:
            log.warning("lost the lease of delivery %s/%s (sent anyway)", c.event_id, c.channel_id)
