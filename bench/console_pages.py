"""How long the console's pages take at 10 k customers and 1 M events (issue 20: < 300 ms),
and the meter query API the meter page shares its query with.

    .venv/bin/python -m bench.console_pages [--db URL] [--customers 10000] [--events 1000000]
        [--subscribed 500] [--rounds 7] [--days 30] [--seeded]

Seeds a fresh database (a temporary SQLite file unless ``--db`` names one): a typed catalog
(a token budget on a SUM meter grouped by model, a switch, an enum; two plans), ``--customers``
customers (one subject each; ``--subscribed`` of them on a plan), and ``--events`` events over
the last ``--days`` days spread over every customer's subject — written through
``allotment events import`` (the ingest door: rollups maintained). Then requests every console
page in process (the whole ASGI app, guard included, no key: loopback) ``--rounds`` times and
reports each page's median and slowest time. Seeding is not timed. The chart grouped by
subject is timed both ways — a page in key order (the default) and ranked by usage
(``order=usage``) — and the ratio printed. The meter page and the
meter query are then timed again in the same process without the per-meter rollups
(``storage/meter_rollup.py``: reads per subject, as before them), and the ratio printed.

``--seeded`` with ``--db``: time the pages of a database this script seeded before (same
``--customers``), without seeding it again — e.g. before and after a change of the read path
on the same data (a pending migration runs first, as ``allotment serve`` would run it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from allotment.clock import SystemClock
from allotment.config import Settings
from allotment.container import Container
from allotment.http.app import create_app
from allotment.storage import meter_rollup
from allotment.storage.database import open_database

METERS: list[dict[str, Any]] = [
    {"slug": "tokens", "eventType": "tokens", "aggregation": "SUM", "valueProperty": "$.n",
     "groupBy": {"model": "$.model"}},
]  # fmt: skip
CONFIG = "meters:\n" + "".join(
    f"  - slug: {m['slug']}\n    eventType: {m['eventType']}\n    aggregation: {m['aggregation']}\n"
    f"    valueProperty: $.n\n    groupBy:\n      model: $.model\n"
    for m in METERS
)
MODELS = ("small", "medium", "large", "xl")
BY_USAGE = ", by usage"
"""A by-subject page ranked by usage (``order=usage``): the baseline of its key-order page."""


class Client:
    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://localhost", timeout=120)  # fmt: skip

    def req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, path, **kw))

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.req(method, path, **kw)
        if r.status_code >= 300:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content and "json" in r.headers.get("content-type", "") else None


def seed_catalog(c: Client) -> None:
    c.ok("POST", "/v1/features", json={"reference": "tokens", "name": "Tokens", "type": "NUMBER",
                                       "meter_reference": "tokens"})  # fmt: skip
    c.ok("POST", "/v1/features", json={"reference": "sso", "name": "SSO", "type": "SWITCH"})
    c.ok("POST", "/v1/features", json={"reference": "tier", "name": "Tier", "type": "ENUM",
                                       "enum_values": ["email", "phone"]})  # fmt: skip
    for ref, n in (("starter", "100000"), ("pro", "10000000")):
        c.ok("POST", "/v1/pricing-plans", json={"reference": ref, "name": ref.title(),
             "entitlements": [{"feature_reference": "tokens", "number": n},
                              {"feature_reference": "sso", "switch": ref == "pro"},
                              {"feature_reference": "tier", "enums": ["email"]}]})  # fmt: skip
    c.ok("POST", "/v1/pricing-plans/pro/versions", json={"entitlements": [
        {"feature_reference": "tokens", "number": "20000000"},
        {"feature_reference": "sso", "switch": True}]})  # fmt: skip


def seed_customers(container: Container, c: Client, n: int, subscribed: int) -> None:
    for i in range(n):
        attribution = {"subjectKeys": [f"sub-{i:05d}"]}
        body = {
            "name": f"Customer {i:05d}",
            "key": f"cust-{i:05d}",
            "usageAttribution": attribution,
        }
        container.customers.create(body)
    for i in range(subscribed):
        c.ok("POST", "/v1/pricing-plan-subscriptions", json={
            "customer_reference": f"cust-{i:05d}", "pricing_plan_reference": "pro",
            "start_at": (datetime.now(UTC) - timedelta(days=40)).isoformat()})  # fmt: skip


def seed_events(db_url: str, n: int, customers: int, days: int, work: Path) -> float:
    rng = random.Random(20)
    now = datetime.now(UTC)
    span = days * 86400
    path = work / "events.ndjson"
    with path.open("w") as f:
        for i in range(n):
            at = now - timedelta(seconds=rng.random() * span)
            f.write(json.dumps({
                "specversion": "1.0", "id": f"b{i}", "source": "bench", "type": "tokens",
                "subject": f"sub-{rng.randrange(customers):05d}", "time": at.isoformat(),
                "data": {"n": rng.randint(1, 2000),
                         "model": rng.choice(MODELS)}}) + "\n")  # fmt: skip
    config = work / "config.yaml"
    config.write_text(CONFIG)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "allotment", "events", "import", str(path), "--db", db_url,
         "--config", str(config), "--no-progress", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - started


def pages(container: Container, customers: int) -> dict[str, str]:
    acme = container.customers.get("cust-00007")
    owned = [
        v
        for v in container.entitlements.list_all([], [], [], False, _paging(), [acme.id])[0]
        if v.record.feature_key == "tokens"
    ]
    eid = owned[0].record.id if owned else ""
    last = container.customers.get(f"cust-{customers - 1:05d}")
    meter = "/console/meters/tokens"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    span = (f"from={today - timedelta(days=30):%Y-%m-%dT%H:%M:%SZ}"
            f"&to={today + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}")  # fmt: skip
    api = f"/api/v1/meters/tokens/query?{span}"
    api_day = (f"/api/v1/meters/tokens/query?from={hour - timedelta(hours=24):%Y-%m-%dT%H:%M:%SZ}"
               f"&to={hour + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}")  # fmt: skip
    return {
        "customers, page 1": "/console/customers",
        "customers, page 100": "/console/customers?page=100",
        "customers, search by name": "/console/customers?by=name&q=Customer%200999",
        "customers, search by subject": "/console/customers?by=subject&q=sub-0424",
        "a customer (subscribed)": f"/console/customers/{acme.id}",
        "a customer (not subscribed)": f"/console/customers/{last.id}",
        "plans": "/console/plans",
        "a plan's versions": "/console/plans/pro",
        "meters": "/console/meters",
        "a meter, 24 h by hour": "/console/meters/tokens?window=HOUR&range=24h",
        "a meter, 30 d by day": "/console/meters/tokens?window=DAY&range=30d",
        "a meter, 30 d by day, by model": f"{meter}?window=DAY&range=30d&group=model",
        "a meter, 24 h by hour, by subject": f"{meter}?window=HOUR&range=24h&group=subject",
        "a meter, 30 d by day, by subject": f"{meter}?window=DAY&range=30d&group=subject",
        "a meter, 1 h by minute, by subject": f"{meter}?window=MINUTE&range=1h&group=subject",
        "a meter, 30 d by day, by subject, page after sub-05000":
            f"{meter}?window=DAY&range=30d&group=subject&after=sub-05000",
        f"a meter, 24 h by hour, by subject{BY_USAGE}":
            f"{meter}?window=HOUR&range=24h&group=subject&order=usage",
        f"a meter, 30 d by day, by subject{BY_USAGE}":
            f"{meter}?window=DAY&range=30d&group=subject&order=usage",
        "an entitlement (burn-down)": f"/console/entitlements/{eid}",
        "API: meter query, 30 d by day": f"{api}&windowSize=DAY",
        "API: meter query, 30 d by day, by model": f"{api}&windowSize=DAY&groupBy=model",
        "API: meter query, 24 h by hour": f"{api_day}&windowSize=HOUR",
        "notifications": "/console/notifications",
        "ingest rate": "/console/ingest",
    }  # fmt: skip


def time_pages(client: Client, targets: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """Each page once as a warm-up (the value cache, templates), then ``rounds`` times (ms)."""
    times: dict[str, list[float]] = {name: [] for name in targets}
    for name, path in targets.items():
        r = client.req("GET", path)
        if r.status_code != 200:
            raise SystemExit(f"{name}: {path} answered {r.status_code}: {r.text[:400]}")
    for _ in range(rounds):
        for name, path in targets.items():
            started = time.perf_counter()
            r = client.req("GET", path)
            times[name].append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, (path, r.status_code)
    return times


def _paging() -> Any:
    from allotment.domain.entitlement_inputs import Paging

    return Paging(True, 1, 50, 50, 0, False, "createdAt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db")
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--subscribed", type=int, default=500)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seeded", action="store_true", help="--db is seeded already: time only")
    args = p.parse_args()
    if args.seeded and not args.db:
        p.error("--seeded needs --db")
    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    db_url = args.db or f"sqlite:///{work}/console.db"
    settings = Settings(db_url=db_url, meters=tuple(METERS))
    container = Container(settings, open_database(db_url), SystemClock())
    container.start()
    client = Client(create_app(container))
    if not args.seeded:
        t0 = time.perf_counter()
        seed_catalog(client)
        seed_customers(container, client, args.customers, args.subscribed)
        t1 = time.perf_counter()
        import_s = seed_events(db_url, args.events, args.customers, args.days, work)
        print(f"seeded {args.customers} customers ({args.subscribed} subscribed) in "
              f"{t1 - t0:.0f} s, {args.events} events in {import_s:.0f} s ({db_url})")  # fmt: skip
    targets = pages(container, args.customers)
    times = time_pages(client, targets, args.rounds)
    # the same-process baseline: the meter reads without the per-meter rows (per subject)
    meter_reads = {n: p for n, p in targets.items() if "/meters/tokens" in p and "subject" not in p}
    with mock.patch.dict(meter_rollup.TABLES, clear=True):
        baseline = time_pages(client, meter_reads, args.rounds)
    width = max(len(n) for n in targets)
    print(f"{'page':<{width}}  median ms  slowest ms  per-subject rows: median ms  ratio"
          f"  ({args.rounds} rounds)")  # fmt: skip
    for name, ms in times.items():
        line = f"{name:<{width}}  {statistics.median(ms):9.1f}  {max(ms):10.1f}"
        if name in baseline:
            base = statistics.median(baseline[name])
            line += f"  {base:26.1f}  {base / statistics.median(ms):5.1f}x"
        print(line)
    print("by subject, a page in key order (the default) against ranking by usage (order=usage):")
    for name, ms in times.items():
        ranked = times.get(name + BY_USAGE)
        if ranked is not None:
            ratio = statistics.median(ranked) / statistics.median(ms)
            print(f"  {name}: {ratio:.1f}x faster in key order")
    container.close()


if __name__ == "__main__":
    main()
