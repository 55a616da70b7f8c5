"""What the guard costs on the value-check hot path (not collected by pytest).

    .venv/bin/python tests/perf_auth.py [--calls 2000] [--rounds 40]
    .venv/bin/python tests/perf_auth.py --http [--backend sqlite|postgres] [--calls 300]

One container, one metered entitlement, its value in the cache; then the same
``GET /api/v1/subjects/s/entitlements/f/value`` is sent straight into three ASGI apps, in
interleaved rounds so machine noise hits all three alike:

* ``no guard``    the fast paths as before this change (the guard's inner app);
* ``guard, off``  the guard with ALLOTMENT_AUTH=off (route policy lookup and header scan only);
* ``guard, key``  the served app with authentication on and a runtime key (a cache hit of the
  key lookup: SHA-256 of the secret, one dict read, one clock read).

Prints the best round's µs per request of each and the ratios to ``no guard``.

``--http``: two real ``allotment serve`` processes on one database, one without keys (auth
off, loopback) and one copy with a key (same database, so the same entitlement), and the same
value check sent over one keep-alive connection to each in interleaved rounds: the whole
request as a client sees it. On PostgreSQL the value check reads the database on every
request, so the guard's share there is smaller.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from allotment.clock import FrozenClock  # noqa: E402
from allotment.config import Settings  # noqa: E402
from allotment.container import Container  # noqa: E402
from allotment.domain.api_keys import AuthMode  # noqa: E402
from allotment.domain.entitlement_inputs import parse_entitlement_create  # noqa: E402
from allotment.http.app import create_app  # noqa: E402
from allotment.http.guard import Guard  # noqa: E402
from allotment.storage.database import open_database  # noqa: E402

PATH = "/api/v1/subjects/s/entitlements/f/value"


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"t"), *headers], "server": ("t", 80),
        "client": ("127.0.0.1", 1),
    }  # fmt: skip


async def _run(app: Any, scope: dict[str, Any], calls: int) -> tuple[float, int]:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    start = time.perf_counter()
    for _ in range(calls):
        await app(scope, receive, send)
    return (time.perf_counter() - start) / calls * 1e6, status


def _http(args: argparse.Namespace) -> None:
    import httpx

    sys.path.insert(0, str(ROOT))
    from tests.api.auth_support import bearer, create_key
    from tests.support import PostgresCluster, ServerProcess, create_pg_database

    cluster = None
    if args.backend == "postgres":
        cluster = PostgresCluster().start()
        url = create_pg_database(cluster.url)
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='allotment-perf-auth-')}/db.sqlite"
    servers: list[ServerProcess] = []
    try:
        open_ = ServerProcess(url).start()
        servers.append(open_)
        with open_.client() as c:  # no key yet: set up without one
            r = c.post("/api/v1/features", json={"key": "f", "name": "f",
                                                 "meterSlug": "tokens_total"})  # fmt: skip
            assert r.status_code == 201, r.text
            body = {"type": "metered", "featureKey": "f", "usagePeriod": {"interval": "DAY"}}
            r = c.post("/api/v1/subjects/s/entitlements", json=body)
            assert r.status_code == 201, r.text
        open_.stop()
        # one server stays keyless (ALLOTMENT_AUTH=off: the guard's policy lookup only), the
        # other requires the key; both on the same database and entitlement
        secret = create_key(url, "app", "runtime")
        open_ = ServerProcess(url, env={"ALLOTMENT_AUTH": "off"}).start()
        keyed = ServerProcess(url).start()
        servers[:] = [open_, keyed]
        targets = {"auth off": (open_, {}), "runtime key": (keyed, bearer(secret))}
        best = dict.fromkeys(targets, float("inf"))
        clients = {n: httpx.Client(base_url=s.url) for n, (s, _) in targets.items()}
        for _ in range(args.rounds):
            for name, (_, headers) in targets.items():
                client = clients[name]
                start = time.perf_counter()
                for _ in range(args.calls):
                    r = client.get(PATH, headers=headers)
                    assert r.status_code == 200, r.text
                best[name] = min(best[name], (time.perf_counter() - start) / args.calls * 1e6)
        base = best["auth off"]
        print(f"value check over HTTP, {args.backend}, one keep-alive connection "
              f"({args.calls} requests × {args.rounds} rounds, best round)")  # fmt: skip
        for name, us in best.items():
            print(f"  {name:11} {us:8.1f} µs/request   ×{us / base:.3f}   (+{us - base:.1f} µs)")
    finally:
        for server in servers:
            server.stop()
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    if args.http:
        _http(args)
        return
    url = f"sqlite:///{tempfile.mkdtemp(prefix='allotment-perf-auth-')}/db.sqlite"
    c = Container(Settings(db_url=url), open_database(url),
                  FrozenClock(datetime(2024, 1, 1, 1, tzinfo=UTC)))  # fmt: skip
    c.start()
    try:
        c.meters.sync_config([{"slug": "m", "eventType": "e", "aggregation": "COUNT"}])
        from allotment.domain.entitlement_inputs import FeatureCreate

        c.features.create(FeatureCreate(key="f", name="f", meter_slug="m", group_filters=None,
                                        metadata=None))  # fmt: skip
        body = {"type": "metered", "featureKey": "f", "usagePeriod": {"interval": "DAY"}}
        c.entitlements.create("s", parse_entitlement_create(body))
        _, secret = c.api_keys.create("app", "runtime")
        served = create_app(c)
        assert isinstance(served, Guard)
        inner = served.app
        off = Guard(inner, keys=c.api_keys, audit=c.audit, mode=AuthMode.OFF,
                    routes=served.routes)  # fmt: skip
        keyed = _scope([(b"authorization", f"Bearer {secret}".encode())])
        plain = _scope([])
        apps = {
            "no guard": (inner, plain),
            "guard, off": (off, plain),
            "guard, key": (served, keyed),
        }
        best = dict.fromkeys(apps, float("inf"))
        for _ in range(args.rounds):
            for name, (app, scope) in apps.items():
                us, status = asyncio.run(_run(app, scope, args.calls))
                assert status == 200, (name, status)
                best[name] = min(best[name], us)
        base = best["no guard"]
        print(f"value check, cache hit, in process ({args.calls} calls × {args.rounds} rounds, "
              "best round)")  # fmt: skip
        for name, us in best.items():
            print(f"  {name:11} {us:7.2f} µs/request   ×{us / base:.3f}   (+{us - base:.2f} µs)")
    finally:
        c.close()


if __name__ == "__main__":
    main()
