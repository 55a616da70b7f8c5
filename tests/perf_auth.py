"""What the guard costs on the value-check hot path, in process (not collected by pytest).

    .venv/bin/python tests/perf_auth.py [--calls 20000] [--rounds 5] [--backend sqlite]

One container, one metered entitlement, its value in the cache; then the same
``GET /api/v1/subjects/s/entitlements/f/value`` is sent straight into three ASGI apps, in
interleaved rounds so machine noise hits all three alike:

* ``no guard``    the fast paths as before this change (the guard's inner app);
* ``guard, off``  the guard with ALLOTMENT_AUTH=off (route policy lookup and header scan only);
* ``guard, key``  the served app with authentication on and a runtime key (a cache hit of the
  key lookup: SHA-256 of the secret, one dict read, one clock read).

Prints the best round's µs per request of each and the ratios to ``no guard``. On PostgreSQL
the value check reads the database on every request, so the guard's share there is smaller.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite"], default="sqlite")
    args = parser.parse_args()
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
