"""The database goes away: 503 problem+json promptly, /healthz stays 200, and the server
recovers by itself when the database is back (same port, same data), without a restart."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support import PostgresCluster, ServerProcess, create_pg_database, unique

pytestmark = pytest.mark.slow

# The documented bound while the database is down is min(pool timeout, 1 s) once a connection
# attempt has failed, and the pool timeout before that; 3 s here. The assertion allows a wide
# margin: it catches a hang (the default client timeout would be 30 s), not a slow machine.
POOL_TIMEOUT = "3"
BOUND_SECONDS = 15.0


def _event_batch(subject: str, n: int = 3) -> list[dict[str, object]]:
    return [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "outage-test",
            "type": "prompt",
            "subject": subject,
            "data": {"tokens": 5, "model": "m"},
        }
        for _ in range(n)
    ]


def _post_batch(c: httpx.Client, batch: list[dict[str, object]]) -> httpx.Response:
    return c.post(
        "/api/v1/events",
        json=batch,
        headers={"content-type": "application/cloudevents-batch+json"},
    )


def _assert_prompt_503(r: httpx.Response, elapsed: float) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers.get("retry-after")
    body = r.json()
    assert body["status"] == 503
    assert body["title"] == "Service Unavailable"
    assert "database" in body["detail"]
    assert elapsed < BOUND_SECONDS


def _timed(fn: object, *args: object) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = fn(*args)  # type: ignore[operator]
    return r, time.monotonic() - t0


def _wait_ready(c: httpx.Client, within: float = 60.0) -> int:
    """Poll /readyz until 200; return how many 503s came first (never a 500, never a hang)."""
    deadline = time.monotonic() + within
    failures = 0
    while time.monotonic() < deadline:
        r = c.get("/readyz")
        if r.status_code == 200:
            return failures
        assert r.status_code == 503, r.text
        failures += 1
        time.sleep(0.2)
    raise AssertionError(f"server did not recover within {within}s")


def _sum_tokens(c: httpx.Client, subject: str) -> str:
    r = c.get("/api/v1/meters/tokens_total/query", params={"subject": subject})
    assert r.status_code == 200, r.text
    return str(sum(row["value"] for row in r.json()["data"]))


def test_outage_answers_503_promptly_and_recovers(own_pg_cluster: PostgresCluster) -> None:
    db = create_pg_database(own_pg_cluster.url)
    server = ServerProcess(db, env={"ALLOTMENT_DB_POOL_TIMEOUT": POOL_TIMEOUT}).start()
    subject = unique("outage")
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            assert c.get("/api/v1/subjects").status_code == 200
            assert _post_batch(c, _event_batch(subject)).status_code == 204

            own_pg_cluster.halt()  # pg_ctl stop -m immediate: every connection is cut

            assert c.get("/healthz").status_code == 200
            for path in ("/readyz", "/api/v1/subjects", "/api/v1/meters/tokens_total/query"):
                r, elapsed = _timed(c.get, path)
                _assert_prompt_503(r, elapsed)
            lost = _event_batch(subject)
            r, elapsed = _timed(_post_batch, c, lost)
            _assert_prompt_503(r, elapsed)
            # Once the pool has seen a connection attempt fail, requests fail fast.
            for _ in range(3):
                r, elapsed = _timed(c.get, "/readyz")
                _assert_prompt_503(r, elapsed)
            assert c.get("/healthz").status_code == 200

            own_pg_cluster.start()  # same port, same data directory

            _wait_ready(c)
            assert c.get("/api/v1/subjects").status_code == 200
            # The client retries the batch that got a 503: it is counted exactly once.
            assert _post_batch(c, lost).status_code == 204
            assert _post_batch(c, lost).status_code == 204
            assert _sum_tokens(c, subject) == "30"
    finally:
        server.stop()


def test_restart_without_traffic_costs_no_request(own_pg_cluster: PostgresCluster) -> None:
    """Every pooled connection is dead after a restart; none of them reaches a request."""
    db = create_pg_database(own_pg_cluster.url)
    server = ServerProcess(db, env={"ALLOTMENT_DB_POOL_MIN_SIZE": "4"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            for _ in range(8):
                assert c.get("/api/v1/subjects").status_code == 200
            own_pg_cluster.halt()
            own_pg_cluster.start()
            for _ in range(8):
                r = c.get("/api/v1/subjects")
                assert r.status_code == 200, r.text
            assert c.get("/readyz").status_code == 200
    finally:
        server.stop()
