"""Same-run A/B of two commits over HTTP: is a refactor free?

    .venv/bin/python -m bench.ab_commits [--backend sqlite|postgres] [--rounds 10]
        [--cells value,query,single,batch] [--control] REV_A REV_B

Each revision is checked out in a temporary ``git worktree`` and served by its own
``allotment serve`` (this venv's interpreter, ``PYTHONPATH`` = that checkout's ``src``), side
by side on identical data: a fresh database each (one throwaway PostgreSQL cluster for all with
``--backend postgres``), the same feature, 50 metered entitlements and 10 000 events sent over
HTTP. One client then measures every server in turn, round after round, in the order
A B … then … B A, so the machine's load (a shared machine is never idle) falls on each alike.
``--control`` serves a second checkout of REV_A beside the others: its ratio to A is the noise
of the run, the band a real difference has to leave.

Cells (one keep-alive client, sequential):

    value   p50 ms of 300 value checks (GET …/entitlements/{feature}/value, 50 subjects)
    query   p50 ms of 60 meter queries (one subject, HOUR windows)
    single  p50 ms of 100 single-event POST /api/v1/events (application/cloudevents+json)
    single16  events/s of 2 000 single-event POSTs from 16 clients at once (the bench's
            ``ingest.single`` shape: group commit under concurrency), then a second's pause
            for the server's fold
    batch   events/s of 6 batches of 500 events
    one     p50 ms of 300 one calls, GET /v1/customers/{ref}/entitlements (catalog.md §5)
    cvalue  p50 ms of 300 GET /api/v1/customers/{ref}/entitlements/{budget}/value
    cget    p50 ms of 300 GET /v1/customers/{ref}
    authorize  p50 ms of 200 POST /v1/customers/{ref}/authorize: one check, one consume, one
            reserve (the bench's call, bench/authorize.py)

The last three read a small catalog made in the setup: a budget on ``tokens_total``, a rate
limit, an ENUM and a SWITCH on one plan, and 50 customers subscribed to it, customer ``c<i>``
owning subject ``s<i>`` (so the 10 000 events are their usage).

Each cell also records the server process's CPU time per request (per event for ``batch``),
from ``/proc/<pid>/task/*/schedstat``: a loaded machine stretches wall time far more than CPU
time. On PostgreSQL the authorize cell also records the CPU per call of the backends serving
the server's database (``authorize db cpu µs``, from ``/proc/<pid>/stat``: clock ticks).
Reported: each version's median over the rounds, its speed ratio to A (> 1 = faster,
for CPU: less CPU) and the median of the per-round ratios (paired: each round's servers
measured moments apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from tests.support import PostgresCluster, create_pg_database, free_port

from bench.httpc import blast, build_request
from bench.procs import cpu_ns
from bench.run import cpu_seconds, db_name

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = 50
CELLS = ("value", "query", "single", "single16", "batch", "one", "cvalue", "cget", "authorize")
SINGLE16_EVENTS = 2_000
Result = dict[str, float]


@contextmanager
def checkout(rev: str, where: Path) -> Iterator[Path]:
    """``rev`` checked out at ``where`` for the duration (a detached worktree, removed after)."""
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(where)], check=False)


class Server:
    """One revision's ``allotment serve`` on its own port and database."""

    def __init__(
        self, name: str, tree: Path, db_url: str, logs: Path, clock: str | None = None
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log = (logs / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "allotment", "serve", "--db", db_url, "--port", str(self.port),
             "--config", str(tree / "examples" / "config.yaml"), "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": str(tree / "src"),
                 **({"ALLOTMENT_TEST_CLOCK": clock} if clock else {})}, stdout=self.log,
            stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
        )  # fmt: skip
        self.c = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        for _ in range(600):
            try:
                if self.c.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start; see {logs / f'{name}.log'}")

    def stop(self) -> None:
        self.c.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def _event(i: int, subject: str, at: datetime) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"e{i}", "source": "ab", "type": "prompt",
            "subject": subject, "time": at.isoformat().replace("+00:00", "Z"),
            "data": {"tokens": i % 97, "model": "m"}}  # fmt: skip


def _ok(r: httpx.Response, status: int) -> httpx.Response:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.text}"
    return r


def setup(c: httpx.Client) -> None:
    body = {"key": "f_tokens", "name": "tokens", "meterSlug": "tokens_total"}
    _ok(c.post("/api/v1/features", json=body), 201)
    for i in range(SUBJECTS):
        ent = {"type": "metered", "featureKey": "f_tokens", "usagePeriod": {"interval": "MONTH"}}
        made = _ok(c.post(f"/api/v1/subjects/s{i}/entitlements", json=ent), 201).json()
        grant = {"amount": 1_000_000_000, "effectiveAt": made["measureUsageFrom"],
                 "expiration": {"duration": "YEAR", "count": 1}}  # fmt: skip
        _ok(c.post(f"/api/v1/subjects/s{i}/entitlements/f_tokens/grants", json=grant), 201)
    _catalog(c)
    now = datetime.now(UTC)
    events = [_event(i, f"s{i % SUBJECTS}", now + timedelta(milliseconds=i)) for i in range(10_000)]
    for k in range(0, len(events), 1000):
        _ok(c.post("/api/v1/events", json=events[k : k + 1000]), 204)


def _catalog(c: httpx.Client) -> None:
    """The /v1 catalog of the one-call cells (see the module doc)."""
    features = [
        {"reference": "ab_budget", "type": "NUMBER", "meter_reference": "tokens_total"},
        {"reference": "ab_rpm", "type": "NUMBER", "rate_window": "MINUTE"},
        {"reference": "ab_models", "type": "ENUM", "enum_values": ["small", "large"]},
        {"reference": "ab_priority", "type": "SWITCH"},
    ]
    for f in features:
        _ok(c.post("/v1/features", json={"name": f["reference"], **f}), 201)
    values = [{"feature_reference": "ab_budget", "number": "100000000"},
              {"feature_reference": "ab_rpm", "number": "600"},
              {"feature_reference": "ab_models", "enums": ["small"]},
              {"feature_reference": "ab_priority", "switch": True}]  # fmt: skip
    _ok(c.post("/v1/pricing-plans", json={"reference": "ab_pro", "name": "Pro",
                                          "entitlements": values}), 201)  # fmt: skip
    start = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    for i in range(SUBJECTS):
        _ok(c.post("/v1/customers", json={"reference": f"c{i}", "name": f"c{i}",
                                          "subject_keys": [f"s{i}"]}), 201)  # fmt: skip
        _ok(c.post("/v1/pricing-plan-subscriptions", json={
            "customer_reference": f"c{i}", "pricing_plan_reference": "ab_pro",
            "start_at": start.isoformat().replace("+00:00", "Z")}), 201)  # fmt: skip


def _timed(
    fn: Callable[[int], object], n: int, pid: int, db: str | None = None
) -> tuple[float, float, float | None]:
    """(median ms per call, server CPU µs per call, with ``db``: the CPU µs per call of the
    PostgreSQL backends serving that database, clock-tick grained) of n calls."""
    times = []
    cpu = cpu_ns(pid)
    db_cpu = None if db is None else cpu_seconds(-1, db)
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    server = (cpu_ns(pid) - cpu) / 1e3 / n
    backends = None if db_cpu is None else (cpu_seconds(-1, db) - db_cpu) * 1e6 / n
    return 1e3 * statistics.median(times), server, backends


def measure(
    c: httpx.Client, pid: int, cells: tuple[str, ...], round_no: int, db: str | None = None
) -> Result:
    """One round of ``cells``; with ``db`` (PostgreSQL), the authorize cell also records
    its database's backends' CPU per call (``authorize db cpu µs``)."""
    base = 1_000_000 * (round_no + 1)  # event ids never repeat across rounds
    single = {"content-type": "application/cloudevents+json"}
    out: Result = {}

    def value(i: int) -> object:
        return _ok(c.get(f"/api/v1/subjects/s{i % SUBJECTS}/entitlements/f_tokens/value"), 200)

    def query(i: int) -> object:
        params = {"subject": f"s{i % SUBJECTS}", "windowSize": "HOUR"}
        return _ok(c.get("/api/v1/meters/tokens_total/query", params=params), 200)

    def one_event(i: int) -> object:
        body = json.dumps(_event(base + i, f"s{i % SUBJECTS}", datetime.now(UTC)))
        return _ok(c.post("/api/v1/events", headers=single, content=body), 204)

    def batch(i: int) -> object:
        now = datetime.now(UTC)
        body = [_event(base + 10_000 + 500 * i + j, f"s{j % SUBJECTS}", now) for j in range(500)]
        return _ok(c.post("/api/v1/events", json=body), 204)

    def one(i: int) -> object:
        return _ok(c.get(f"/v1/customers/c{i % SUBJECTS}/entitlements"), 200)

    def cvalue(i: int) -> object:
        return _ok(c.get(f"/api/v1/customers/c{i % SUBJECTS}/entitlements/ab_budget/value"), 200)

    def cget(i: int) -> object:
        return _ok(c.get(f"/v1/customers/c{i % SUBJECTS}"), 200)

    authorize_body = json.dumps({
        "checks": [{"feature_reference": "ab_models", "value": "small"}],
        "consume": [{"feature_reference": "ab_rpm"}],
        "reserve": [{"feature_reference": "ab_budget", "amount": 1, "ttl_seconds": 300}],
    })  # fmt: skip

    def authorize(i: int) -> object:
        path = f"/v1/customers/c{i % SUBJECTS}/authorize"
        headers = {"content-type": "application/json"}
        return _ok(c.post(path, headers=headers, content=authorize_body), 200)

    timed = (("value", value, 300), ("query", query, 60), ("single", one_event, 100),
             ("one", one, 300), ("cvalue", cvalue, 300), ("cget", cget, 300),
             ("authorize", authorize, 200))  # fmt: skip
    for cell, fn, n in timed:
        if cell in cells:
            with_db = db if cell == "authorize" else None
            out[f"{cell} p50 ms"], out[f"{cell} cpu µs"], backends = _timed(fn, n, pid, with_db)
            if backends is not None:
                out[f"{cell} db cpu µs"] = backends
    if "single16" in cells:
        url, now = str(c.base_url), datetime.now(UTC)
        bodies = [
            json.dumps(_event(base + 500_000 + i, f"s{i % SUBJECTS}", now)).encode()
            for i in range(SINGLE16_EVENTS)
        ]
        sent = [build_request(url, "POST", "/api/v1/events", b, single["content-type"])
                for b in bodies]  # fmt: skip
        cpu = cpu_ns(pid)
        blasted = blast(url, sent, 16)
        if blasted.statuses != {204: SINGLE16_EVENTS}:
            raise RuntimeError(f"single16: answers {blasted.statuses}")
        out["single16 ev/s"] = SINGLE16_EVENTS / blasted.seconds
        out["single16 cpu µs/ev"] = (cpu_ns(pid) - cpu) / 1e3 / SINGLE16_EVENTS
        time.sleep(1.0)  # the fold of these events, before the next server is measured
    if "batch" in cells:
        start, cpu = time.perf_counter(), cpu_ns(pid)
        for i in range(6):
            batch(i)
        out["batch ev/s"] = 3000 / (time.perf_counter() - start)
        out["batch cpu µs/ev"] = (cpu_ns(pid) - cpu) / 1e3 / 3000
    return out


def _speed(cell: str, base: float, other: float) -> float:
    return other / base if "/s" in cell else base / other


def report(results: dict[str, list[Result]], backend: str) -> str:
    names = list(results)
    first = names[0]
    lines = [f"{backend}: median of {len(results[first])} rounds; ratio = speed vs {first} "
             "(> 1 faster), paired = median of the per-round ratios"]  # fmt: skip
    for cell in results[first][0]:
        med = {n: statistics.median(r[cell] for r in results[n]) for n in names}
        line = f"  {cell:14}" + "".join(f"  {n} {med[n]:10.3f}" for n in names)
        for n in names[1:]:
            paired = statistics.median(
                _speed(cell, a[cell], b[cell])
                for a, b in zip(results[first], results[n], strict=True)
            )
            line += f"  {n}: {_speed(cell, med[first], med[n]):.2f} (paired {paired:.2f})"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--control", action="store_true", help="also serve a second copy of REV_A")
    ap.add_argument(
        "--frozen-clock",
        action="store_true",
        help="serve on a clock stopped at the start (as the bench does: caches stay warm)",
    )
    args = ap.parse_args(argv)
    cells = tuple(args.cells.split(","))
    unknown = set(cells) - set(CELLS)
    if unknown:
        ap.error(f"unknown cells {sorted(unknown)}; known: {', '.join(CELLS)}")
    versions = {"A": args.rev_a, "B": args.rev_b, **({"A'": args.rev_a} if args.control else {})}
    tmp = Path(tempfile.mkdtemp(prefix="allotment-ab-"))
    with ExitStack() as stack:
        trees = {n: stack.enter_context(checkout(rev, tmp / f"tree-{i}"))
                 for i, (n, rev) in enumerate(versions.items())}  # fmt: skip
        if args.backend == "postgres":
            cluster = PostgresCluster().start()
            stack.callback(cluster.stop)
            urls = {n: create_pg_database(cluster.url) for n in versions}
        else:
            urls = {n: f"sqlite:///{tmp}/{i}.sqlite" for i, n in enumerate(versions)}
        servers = {}
        clock = None
        if args.frozen_clock:
            clock = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        for n in versions:
            servers[n] = Server(n, trees[n], urls[n], tmp, clock)
            stack.callback(servers[n].stop)
        for s in servers.values():
            setup(s.c)
            measure(s.c, s.proc.pid, cells, 10_000)  # warm-up, discarded (its own event ids)
        dbs = {n: db_name(u) for n, u in urls.items()}
        results: dict[str, list[Result]] = {n: [] for n in versions}
        order = list(versions)
        for round_no in range(args.rounds):
            for n in order if round_no % 2 == 0 else order[::-1]:
                srv = servers[n]
                results[n].append(measure(srv.c, srv.proc.pid, cells, round_no, dbs[n]))
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        print(" ".join(f"{n} = {rev}" for n, rev in versions.items()))
        print(report(results, args.backend))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
