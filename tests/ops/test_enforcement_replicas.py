"""Enforcement under concurrency over HTTP: SQLite (one server process, many threads) and
three server processes on one PostgreSQL database. N concurrent reserves of A against a
remaining R succeed exactly floor(R / A) times; a rate limit of L allows exactly L of many
concurrent requests spread over the replicas; commits retried on other replicas count once; one
idempotency key sent to every replica at once applies once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.enforcement.catalog_setup import build_guide
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

THREADS = 12


def _servers(
    backend: str, db_url: str, make_server: Callable[..., ServerProcess]
) -> list[ServerProcess]:
    n = 3 if backend == "postgres" else 1
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: make_server(db_url=db_url), range(n)))


class Spread:
    """One keep-alive client per (thread, server); request i goes to server i % n."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self._local = threading.local()
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        self._all: list[httpx.Client] = []

    def __enter__(self) -> Spread:
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self._all:
            c.close()

    def post(self, i: int, path: str, body: object) -> httpx.Response:
        clients: dict[int, httpx.Client] = self._local.__dict__.setdefault("c", {})
        k = i % len(self.servers)
        if k not in clients:
            clients[k] = httpx.Client(base_url=self.servers[k].url, timeout=60.0)
            with self._lock:
                self._all.append(clients[k])
        for _ in range(20):
            r = clients[k].post(path, json=body)
            if r.status_code != 503:
                break
        with self._lock:
            self.statuses.append(r.status_code)
        return r


def test_concurrent_reserves_never_overspend(
    backend: str, new_db_url: Callable[[], str], make_server: Callable[..., ServerProcess]
) -> None:
    servers = _servers(backend, new_db_url(), make_server)
    with servers[0].client() as c:
        g = build_guide(c, budget=1000)
    with Spread(servers) as spread:
        path = f"/v1/customers/{g.customer}/authorize"
        body = {"reserve": [{"feature_reference": g.budget, "amount": 70}]}
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(lambda i: spread.post(i, path, body), range(48)))
        codes = [r.status_code for r in answers]
        assert codes.count(200) == 1000 // 70, codes
        assert codes.count(402) == 48 - 1000 // 70, codes
        # commit every reservation twice, on two different replicas, concurrently: counts once
        ids = [r.json()["reservation_id"] for r in answers if r.status_code == 200]
        jobs = [(i + k, rid) for i, rid in enumerate(ids) for k in (0, 1)]
        with ThreadPoolExecutor(THREADS) as pool:
            commits = list(
                pool.map(
                    lambda j: spread.post(
                        j[0], f"/v1/reservations/{j[1]}/commit", {"amounts": {g.budget: 50}}
                    ),
                    jobs,
                )
            )
        assert [r.status_code for r in commits] == [200] * len(jobs)
        with servers[-1].client() as c:
            r = c.get(
                "/v1/ingest/meter-data",
                params={"customer_reference": g.customer, "meter_reference": g.meter},
            )
            assert Decimal(r.json()["data"][0]["value"]) == 50 * len(ids)
            # what is left (1000 - 700) is again exactly floor(300 / 70) reserves
        with ThreadPoolExecutor(THREADS) as pool:
            again = list(pool.map(lambda i: spread.post(i, path, body), range(12)))
        assert [r.status_code for r in again].count(200) == 300 // 70
        assert not [s for s in spread.statuses if s >= 500]


def test_rate_limit_exact_across_replicas(
    backend: str, new_db_url: Callable[[], str], make_server: Callable[..., ServerProcess]
) -> None:
    """10 per HOUR (the test cannot outlast the window): 60 concurrent requests over the
    replicas, exactly 10 allowed; every refusal carries the rate-limit fields."""
    servers = _servers(backend, new_db_url(), make_server)
    with servers[0].client() as c:
        g = build_guide(c, rpm=10, rate_window="HOUR")
    with Spread(servers) as spread:
        path = f"/v1/customers/{g.customer}/authorize"
        body = {"consume": [{"feature_reference": g.rpm}]}
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(lambda i: spread.post(i, path, body), range(60)))
        codes = [r.status_code for r in answers]
        assert codes.count(200) == 10, codes
        assert codes.count(429) == 50, codes
        for r in answers:
            if r.status_code == 429:
                assert 1 <= int(r.headers["retry-after"]) <= 3600
                assert r.headers["ratelimit"].startswith(f'"{g.rpm}";r=0;')
                assert r.headers["ratelimit-policy"] == f'"{g.rpm}";q=10;w=3600'
        remaining = sorted(
            int(r.json()["remaining"][g.rpm]) for r in answers if r.status_code == 200
        )
        assert remaining == list(range(10))  # each allowed request saw a distinct count


def test_one_idempotency_key_applies_once_across_replicas(
    backend: str, new_db_url: Callable[[], str], make_server: Callable[..., ServerProcess]
) -> None:
    servers = _servers(backend, new_db_url(), make_server)
    with servers[0].client() as c:
        g = build_guide(c, budget=1000)
    body = {
        "consume": [{"feature_reference": g.rpm}],
        "reserve": [{"feature_reference": g.budget, "amount": 100}],
        "idempotency_key": "one-key",
    }
    path = f"/v1/customers/{g.customer}/authorize"
    with Spread(servers) as spread, ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda i: spread.post(i, path, body), range(24)))
    assert [r.status_code for r in answers] == [200] * 24
    assert len({r.json()["reservation_id"] for r in answers}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in answers) == 1
    with servers[-1].client() as c:
        left = c.post(path, json={"consume": body["consume"]})
        assert left.json()["remaining"] == {g.rpm: "1"}  # 3 per minute: 1 + this one used
