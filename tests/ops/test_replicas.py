"""Several server processes on one database (PostgreSQL: three replicas; SQLite: one process,
many threads): overlapping batches with the same ids retried across processes, while grants are
created and voided and the entitlement is reset concurrently. Afterwards meter sums, grants and
balances are exactly what they must be: nothing lost, nothing doubled, no 500."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.ops.helpers import batch_events, batches_seen, meter_total, post_batch, whole
from tests.support import ServerProcess, unique

pytestmark = pytest.mark.slow

THREADS = 12
K = 3  # events of each kind per batch


def _start_servers(
    backend: str, db_url: str, make_server: Callable[..., ServerProcess]
) -> list[ServerProcess]:
    """Three replicas on PostgreSQL, started together (concurrent migrations); one on SQLite."""
    n = 3 if backend == "postgres" else 1
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: make_server(db_url=db_url), range(n)))


class Clients:
    """One keep-alive client per (thread, server); every status seen is recorded."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self._local = threading.local()
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()
        self.statuses: list[tuple[str, int, str]] = []

    def _client(self, i: int) -> httpx.Client:
        cache: dict[int, httpx.Client] = self._local.__dict__.setdefault("clients", {})
        if i not in cache:
            cache[i] = httpx.Client(base_url=self.servers[i].url, timeout=60.0)
            with self._lock:
                self._all.append(cache[i])
        return cache[i]

    def call(self, i: int, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send to server ``i % n``; a 503 (overload) is retried like a real client would."""
        c = self._client(i % len(self.servers))
        for _ in range(20):
            r = c.request(method, path, **kw)
            with self._lock:
                self.statuses.append((f"{method} {path}", r.status_code, r.text[:300]))
            if r.status_code != 503:
                return r
        return r

    def batch(self, i: int, events: list[dict[str, Any]]) -> httpx.Response:
        c = self._client(i % len(self.servers))
        for _ in range(20):
            r = post_batch(c, events)
            with self._lock:
                self.statuses.append(("POST /api/v1/events", r.status_code, r.text[:300]))
            if r.status_code != 503:
                return r
        return r

    def server_errors(self) -> list[tuple[str, int, str]]:
        return [s for s in self.statuses if s[1] >= 500 and s[1] != 503]

    def close(self) -> None:
        for c in self._all:
            c.close()


def test_overlapping_batches_across_replicas_count_once(
    backend: str, db_url: str, make_server: Callable[..., ServerProcess]
) -> None:
    servers = _start_servers(backend, db_url, make_server)
    clients = Clients(servers)
    subject = unique("replicas")
    batches = [f"{subject}_b{b}" for b in range(24)]
    # Every batch is sent three times, to three different processes, in random order.
    sends = [(b, (n + r) % len(servers)) for n, b in enumerate(batches) for r in range(3)]
    random.Random(7).shuffle(sends)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            responses = list(
                pool.map(lambda s: clients.batch(s[1], batch_events(subject, s[0], K)), sends)
            )
        assert clients.server_errors() == []
        assert {r.status_code for r in responses} == {204}
        for i in range(len(servers)):  # every replica sees the same, exact totals
            with httpx.Client(base_url=servers[i].url, timeout=60.0) as c:
                assert batches_seen(c, subject) == {b: whole(K) for b in batches}
    finally:
        clients.close()


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_grants_voids_resets_and_usage_across_replicas(
    backend: str, db_url: str, make_server: Callable[..., ServerProcess]
) -> None:
    servers = _start_servers(backend, db_url, make_server)
    clients = Clients(servers)
    subject = unique("ent")
    feature = unique("feat")
    try:
        r = clients.call(
            0,
            "POST",
            "/api/v1/features",
            json={"key": feature, "name": feature, "meterSlug": "tokens_total"},
        )
        assert r.status_code == 201, r.text
        # The usage period starts ten minutes ago, so a reset "now" is a new minute.
        past = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
        r = clients.call(
            0,
            "POST",
            f"/api/v1/subjects/{subject}/entitlements",
            json={
                "type": "metered",
                "featureKey": feature,
                "usagePeriod": {"interval": "DAY", "anchor": _iso(past)},
                "measureUsageFrom": _iso(past),
            },
        )
        assert r.status_code == 201, r.text
        ent = r.json()["id"]
        grants_path = f"/api/v1/subjects/{subject}/entitlements/{ent}/grants"
        # A large first grant absorbs all usage (priority 1) and rolls over whole at a reset;
        # the later grants (priority 255) are never burnt, so voiding one removes its amount.
        base = Decimal(1_000_000)
        r = clients.call(
            0,
            "POST",
            grants_path,
            json={
                "amount": 1_000_000,
                "priority": 1,
                "effectiveAt": _iso(past),
                "expiration": {"duration": "YEAR", "count": 1},
                "maxRolloverAmount": 1_000_000,
            },
        )
        assert r.status_code == 201, r.text
        first_grant = r.json()["id"]

        created: dict[str, Decimal] = {}
        voided: set[str] = set()
        resets: list[tuple[int, datetime, datetime]] = []
        lock = threading.Lock()
        usage_batches = [f"{subject}_u{b}" for b in range(12)]

        def grant_task(i: int) -> None:
            amount = Decimal(i + 1)
            g = clients.call(
                i,
                "POST",
                grants_path,
                json={
                    "amount": i + 1,
                    "priority": 255,
                    "effectiveAt": _iso(datetime.now(UTC)),
                    "expiration": {"duration": "YEAR", "count": 1},
                    "maxRolloverAmount": i + 1,
                },
            )
            # 400 is allowed only if a concurrent reset moved the period start past this
            # grant's minute (a minute boundary crossed mid-request).
            assert g.status_code in (201, 400), g.text
            if g.status_code != 201:
                return
            gid = g.json()["id"]
            with lock:
                created[gid] = amount
            if i % 3 == 0:  # void it through another process
                v = clients.call(i + 1, "DELETE", f"/api/v1/grants/{gid}")
                assert v.status_code == 204, v.text
                with lock:
                    voided.add(gid)

        def reset_task(i: int) -> None:
            t0 = datetime.now(UTC)
            rr = clients.call(
                i, "POST", f"/api/v1/subjects/{subject}/entitlements/{ent}/reset", json={}
            )
            t1 = datetime.now(UTC)
            assert rr.status_code in (204, 400), rr.text  # 400: a reset in this minute exists
            with lock:
                resets.append((rr.status_code, t0, t1))

        def usage_task(i: int) -> None:
            b = usage_batches[i % len(usage_batches)]
            u = clients.batch(i, batch_events(subject, b, K))
            assert u.status_code == 204, u.text

        tasks: list[Callable[[], None]] = []
        tasks += [lambda i=i: grant_task(i) for i in range(15)]
        tasks += [lambda i=i: reset_task(i) for i in range(6)]
        tasks += [lambda i=i: usage_task(i) for i in range(2 * len(usage_batches))]  # twice each
        random.Random(11).shuffle(tasks)
        with ThreadPoolExecutor(THREADS) as pool:
            for f in [pool.submit(t) for t in tasks]:
                f.result()

        assert clients.server_errors() == []
        minutes = {t.replace(second=0, microsecond=0) for _, t0, t1 in resets for t in (t0, t1)}
        succeeded = [s for s, _, _ in resets if s == 204]
        assert 1 <= len(succeeded) <= len(minutes), resets  # one reset per minute, at least one

        usage = Decimal(len(usage_batches) * K * (K + 1) // 2)
        expected = base + sum(a for g, a in created.items() if g not in voided) - usage
        for i in range(len(servers)):
            with httpx.Client(base_url=servers[i].url, timeout=60.0) as c:
                assert meter_total(c, "tokens_total", subject) == usage
                v = c.get(f"/api/v1/subjects/{subject}/entitlements/{ent}/value")
                assert v.status_code == 200, v.text
                value = v.json()
                assert Decimal(str(value["balance"])) == expected, (value, expected)
                assert value["hasAccess"] is True
                g = c.get(grants_path, params={"includeDeleted": "true"})
                assert g.status_code == 200, g.text
                listed = [x["id"] for x in g.json()]
                assert sorted(listed) == sorted([first_grant, *created]), "lost or doubled grant"
                voided_listed = {x["id"] for x in g.json() if x.get("voidedAt")}
                assert voided_listed == voided
    finally:
        clients.close()
