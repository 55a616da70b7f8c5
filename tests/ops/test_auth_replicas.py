"""Revocation across replicas: server processes on one PostgreSQL database.

The revoking process refuses the key with its very next request; one started with
ALLOTMENT_AUTH_CACHE_SECONDS=0 reads the key's row on every request and refuses it at once too;
one that caches lookups for 60 s (the most allowed) refuses it as soon as the revocation notice
arrives (LISTEN/NOTIFY), long before its cache entry would expire. A key created on one replica
works on the others at once (unknown keys are never cached). The first key, created on one
replica, turns authentication on on another that caches "no key exists" for 60 s as soon as
the create's notice arrives."""

from __future__ import annotations

import contextlib
import time

import httpx

from allotment.domain import limits
from tests.api.auth_support import bearer, check_refused, create_key
from tests.support import (
    PostgresCluster,
    ServerProcess,
    create_pg_database,
    running_server,
    unique,
)

NEEDED = ["admin", "read"]


def _ok(r: httpx.Response, status: int = 200) -> dict[str, object]:
    assert r.status_code == status, r.text
    body: dict[str, object] = r.json()
    return body


def test_a_revoked_key_is_refused_by_every_replica(pg_db_url: str) -> None:
    admin = create_key(pg_db_url, "root", "admin")
    with contextlib.ExitStack() as stack:
        revoker, cached, uncached = (
            stack.enter_context(running_server(pg_db_url, env=env))
            for env in (
                {},
                {"ALLOTMENT_AUTH_CACHE_SECONDS": str(limits.AUTH_CACHE_SECONDS_MAX)},
                {"ALLOTMENT_AUTH_CACHE_SECONDS": "0"},
            )
        )
        _revocation(admin, revoker, cached, uncached)


def _revocation(
    admin: str, revoker: ServerProcess, cached: ServerProcess, uncached: ServerProcess
) -> None:
    name = unique("app").replace("_", "-")
    with revoker.client() as a, cached.client() as b, uncached.client() as c:
        made = _ok(a.post("/v1/api-keys", json={"name": name, "scope": "read"},
                          headers=bearer(admin)), 201)  # fmt: skip
        key = bearer(str(made["secret"]))
        for client in (b, c, a, b, c, a):  # works everywhere at once; now in every cache
            _ok(client.get("/api/v1/meters", headers=key))
        _ok(a.delete(f"/v1/api-keys/{name}", headers=bearer(admin)))
        check_refused(a.get("/api/v1/meters", headers=key), 401, NEEDED)
        check_refused(c.get("/api/v1/meters", headers=key), 401, NEEDED)
        # the caching replica: refused once the notice has arrived (milliseconds; the poll's
        # bound only catches a notice that never comes: its cache entry would live 60 s)
        deadline = time.monotonic() + 10
        while b.get("/api/v1/meters", headers=key).status_code == 200:
            assert time.monotonic() < deadline, "the revocation notice never arrived"
            time.sleep(0.01)
        for client in (a, b, c):
            check_refused(client.get("/api/v1/meters", headers=key), 401, NEEDED)
            _ok(client.get("/api/v1/meters", headers=bearer(admin)))


def test_the_first_key_turns_auth_on_on_every_replica(pg_db_url: str) -> None:
    cached_env = {"ALLOTMENT_AUTH_CACHE_SECONDS": str(limits.AUTH_CACHE_SECONDS_MAX)}
    with (
        running_server(pg_db_url) as creator,
        running_server(pg_db_url, env=cached_env) as cached,
        creator.client() as a,
        cached.client() as b,
    ):
        for client in (a, b, a, b):  # no key anywhere: open on loopback, remembered so
            _ok(client.get("/api/v1/meters"))
        made = _ok(a.post("/v1/api-keys", json={"name": "first", "scope": "admin"}), 201)
        key = bearer(str(made["secret"]))
        check_refused(a.get("/api/v1/meters"), 401, NEEDED)  # the creating replica: at once
        # the other: once the create's notice has arrived (milliseconds; without it, its "no
        # key" answer would stand for 60 s, so the poll's 10 s bound would fail)
        deadline = time.monotonic() + 10
        while b.get("/api/v1/meters").status_code == 200:
            assert time.monotonic() < deadline, "the create's notice never arrived"
            time.sleep(0.01)
        for client in (a, b):
            check_refused(client.get("/api/v1/meters"), 401, NEEDED)
            _ok(client.get("/api/v1/meters", headers=key))


def test_every_worker_process_requires_the_key(pg_db_url: str) -> None:
    """``--workers 2``: each worker builds its app from the environment, guard included."""
    admin = create_key(pg_db_url, "root", "admin")
    with running_server(pg_db_url, extra_args=["--workers", "2", "--host", "0.0.0.0"]) as server:
        for _ in range(8):  # new connections, spread over the workers by the kernel
            with httpx.Client(base_url=server.url, timeout=30.0) as c:
                check_refused(c.get("/api/v1/meters"), 401, NEEDED)
                _ok(c.get("/api/v1/meters", headers=bearer(admin)))


def test_a_key_lookup_during_a_database_outage_is_503(own_pg_cluster: PostgresCluster) -> None:
    """The guard reads keys outside Starlette's error handling: an outage must still be the
    app's 503 problem with Retry-After, never a bare 500; the key works again after recovery."""
    db = create_pg_database(own_pg_cluster.url)
    admin = create_key(db, "root", "admin")
    env = {"ALLOTMENT_DB_POOL_TIMEOUT": "3", "ALLOTMENT_AUTH_CACHE_SECONDS": "0"}
    with running_server(db, env=env) as server, server.client() as c:
        _ok(c.get("/api/v1/meters", headers=bearer(admin)))
        own_pg_cluster.halt()
        for headers in (bearer(admin), bearer("alm_" + "x" * 43)):
            r = c.get("/api/v1/meters", headers=headers)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            assert "database" in r.json()["detail"]
        check_refused(c.get("/api/v1/meters"), 401, NEEDED)  # no key: no lookup needed
        own_pg_cluster.start()
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.2)
        _ok(c.get("/api/v1/meters", headers=bearer(admin)))
