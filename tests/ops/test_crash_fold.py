"""Crash safety of the deferred fold (issue 18): SIGKILL the server while its writer is
folding the unfolded tail into the rollups in the background; after a restart on the same
database every acknowledged event counts exactly once, and retries double nothing."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from allotment.services.fold_pacing import fold_step
from allotment.storage import usage_tail
from allotment.storage.database import open_database
from tests.ops.helpers import batch_events, batches_seen, post_batch, whole
from tests.support import ServerProcess, unique

pytestmark = pytest.mark.slow

K = 250  # events of each kind per batch (500 events per batch)
BATCHES = 64  # 32 000 events: several background fold steps (2 000, 4 000, 8 000, ...)
CLIENTS = 8  # back to back, so the writer is never idle long enough to fold while they post


def _unfolded(db_url: str) -> int:
    """How many stored events wait to be folded, as the database has it now."""
    db = open_database(db_url)
    try:
        with db.read() as tx:
            return usage_tail.lag(tx)
    finally:
        db.close()


def test_sigkill_during_the_background_fold_counts_every_event_once(
    db_url: str, make_server: Callable[..., ServerProcess]
) -> None:
    # more than the first two background steps (fold_pacing.fold_step: the chunk doubles per step)
    assert BATCHES * 2 * K > fold_step(0, 0) + fold_step(0, 1)
    first = make_server(db_url=db_url)
    subject = unique("crashfold")
    ids = [f"{subject}_b{i}" for i in range(BATCHES)]

    def send(part: list[str]) -> None:
        with httpx.Client(base_url=first.url, timeout=60.0) as c:
            for b in part:
                r = post_batch(c, batch_events(subject, b, K))
                assert r.status_code == 204, r.text

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, [ids[i::CLIENTS] for i in range(CLIENTS)]))
    # every batch acknowledged; kill once the writer has folded some, but not all, of them
    deadline = time.monotonic() + 60
    start = left = _unfolded(db_url)
    while time.monotonic() < deadline and left >= start:
        time.sleep(0.002)
        left = _unfolded(db_url)
    first.kill()  # SIGKILL: no shutdown hook (which would fold the rest) runs
    left = _unfolded(db_url)
    assert 0 < left < start, (start, left)  # killed in the middle of folding

    second = make_server(db_url=db_url)
    with httpx.Client(base_url=second.url, timeout=60.0) as c:
        assert batches_seen(c, subject) == {b: whole(K) for b in ids}
        for b in ids[:5] + ids[-5:]:  # retries of acknowledged batches count nothing
            assert post_batch(c, batch_events(subject, b, K)).status_code == 204
        seen = batches_seen(c, subject)
        assert seen == {b: whole(K) for b in ids}
        assert sum(v[1] for v in seen.values()) == Decimal(BATCHES * K)
