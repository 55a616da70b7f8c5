"""Crash safety: SIGKILL the server in the middle of a stream of batch ingests; after a restart
on the same database every batch that got a 204 is there exactly once, every other batch is
there whole or not at all, and client retries of the same ids never double anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from tests.ops.helpers import batch_events, batches_seen, post_batch, whole
from tests.support import ServerProcess, unique

pytestmark = pytest.mark.slow

K = 4  # events of each kind per batch (8 events per batch)
STREAMS = 3  # concurrent client threads
ACKED_BEFORE_KILL = 24  # batches acknowledged before the SIGKILL


def test_sigkill_mid_stream_loses_nothing_acknowledged(
    db_url: str, make_server: Callable[..., ServerProcess]
) -> None:
    first = make_server(db_url=db_url)
    subject = unique("crash")
    outcome: dict[str, str] = {}  # batch id -> "acked" | "failed" | "in-flight"
    lock = threading.Lock()
    stop = threading.Event()
    unexpected: list[str] = []

    def stream(n: int) -> None:
        with httpx.Client(base_url=first.url, timeout=30.0) as c:
            i = 0
            while not stop.is_set():
                batch_id = f"{subject}_s{n}_b{i}"
                i += 1
                with lock:
                    outcome[batch_id] = "in-flight"
                try:
                    r = post_batch(c, batch_events(subject, batch_id, K))
                except httpx.HTTPError:
                    with lock:
                        outcome[batch_id] = "failed"
                    return  # the server is gone
                with lock:
                    outcome[batch_id] = "acked" if r.status_code == 204 else "failed"
                    if r.status_code != 204:
                        unexpected.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(STREAMS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with lock:
            if sum(v == "acked" for v in outcome.values()) >= ACKED_BEFORE_KILL:
                break
        time.sleep(0.01)
    first.kill()  # SIGKILL: no shutdown hook runs
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not unexpected, unexpected
    acked = {b for b, v in outcome.items() if v == "acked"}
    not_acked = set(outcome) - acked
    assert len(acked) >= ACKED_BEFORE_KILL
    assert not_acked, "the kill should cut off at least one request in flight"

    second = make_server(db_url=db_url)
    with httpx.Client(base_url=second.url, timeout=30.0) as c:
        seen = batches_seen(c, subject)
        assert set(seen) <= set(outcome), "data for a batch nobody sent"
        for b in acked:
            assert seen.get(b) == whole(K), f"acknowledged batch {b}: {seen.get(b)}"
        for b in not_acked:  # cut off by the crash: all or nothing
            assert seen.get(b, (Decimal(0), Decimal(0))) in ((Decimal(0), Decimal(0)), whole(K))

        # The client retries everything that was not acknowledged, and (a confused client)
        # some that were: the same ids, so nothing is counted twice.
        retry = sorted(not_acked) + sorted(acked)[:5]
        for b in retry:
            r = post_batch(c, batch_events(subject, b, K))
            assert r.status_code == 204, r.text
        seen = batches_seen(c, subject)
        assert seen == {b: whole(K) for b in outcome}
