"""The benchmark run: builds (or reuses) the data sets, measures every figure with its two
references, and returns one JSON-able result. See docs/benchmarks.md.

Past ~500 lines (a harness, not product code): every cell's plan, order, warm-up and reference
pairing is read in one place so a run is reproducible from this file; the cell kinds (ingest,
value checks, queries, catalog) are the seams to split along if it grows further.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import authorize as A
from bench import bulk, catalog_call, notify_cost
from bench import data as D
from bench import project as P
from bench.httpc import BlastResult, Conn, blast, build_request
from bench.procs import DurablePostgres, RefApp, Server, cpu_ns, pg_admin_database
from bench.refapp import NaiveIngest
from bench.stores import Store, count_rows, is_pg, sqlite_path

NAIVE_TABLE = "naive_events"
FLOOR_TABLE = "floor_events"


@dataclass
class Plan:
    """How much of everything a mode measures."""

    sizes: list[int]
    subjects: int
    budget_s: float
    """Most seconds one latency cell may take (it stops early, after at least 20 samples)."""
    ingest_batch_events: int
    ingest_single_events: int
    floor_single_events: int
    concurrency: int
    value_http: int
    value_heavy: int
    value_inproc: int
    value_throughput: int
    query_one: int
    query_all: int
    query_all_naive: int
    load_batch: int
    catalog_sizes: list[int] = field(default_factory=lambda: [10_000])
    """Events in the data sets of the one `/v1` call (bench/catalog_call.py)."""
    catalog_calls: int = 2_000
    catalog_http: bool = False
    """Also the one call over HTTP (``catalog.http.<n>``; full mode, to keep quick under 2 min)."""
    ingest_replicas: tuple[int, ...] = ()
    """PostgreSQL only: batch ingest again with ``allotment serve --workers N`` for each N."""
    ingest_replica_events: int = 0
    notify_batches: int = 20
    """1000-event batches per phase of ``notify.ingest`` (bench/notify_cost.py)."""
    notify_rounds: int = 1
    """Alternations of the no-rule and the with-rules phase (the medians are compared)."""
    notify_rules: int = 1000
    notify_subjects: int = 200
    authorize_rounds: int = 20
    """With two data sets or more: rounds of the interleaved authorize latency (the scale
    figure's two p50s measured in the same minutes, bench/authorize.py ``interleaved``)."""
    authorize_round_calls: int = 60
    """Calls per side in each interleaved round."""


PLANS = {
    "quick": Plan(
        sizes=[10_000],
        subjects=100,
        budget_s=2.0,
        ingest_batch_events=10_000,
        ingest_single_events=1_000,
        floor_single_events=200,
        concurrency=16,
        value_http=2_000,
        value_heavy=200,
        value_inproc=2_000,
        value_throughput=500,
        query_one=200,
        query_all=5,
        query_all_naive=3,
        load_batch=1000,
    ),
    "full": Plan(
        sizes=[10_000, 10_000_000],
        subjects=D.SUBJECTS,
        budget_s=60.0,
        ingest_batch_events=1_000_000,
        ingest_single_events=50_000,
        floor_single_events=5_000,
        concurrency=16,
        value_http=20_000,
        value_heavy=2_000,
        value_inproc=20_000,
        value_throughput=50_000,
        query_one=500,
        query_all=7,
        query_all_naive=2,
        load_batch=10_000,
        catalog_sizes=[10_000, 1_000_000],
        catalog_calls=20_000,
        catalog_http=True,
        ingest_replicas=(1, 2, 3),
        ingest_replica_events=300_000,
        notify_batches=100,
        notify_rounds=4,
        authorize_rounds=40,
        authorize_round_calls=125,
    ),
}


@dataclass
class Options:
    mode: str
    backends: list[str]
    out: Path
    data_dir: Path
    pg_url: str | None = None
    sizes: list[int] | None = None
    rebuild: bool = False
    loader: str = "auto"
    verbose: bool = True
    only: str | None = None
    """Measure one group of figures only: ``ingest`` (no data sets, reads or catalog),
    ``notify`` (``notify.ingest``), ``catalog`` (the one ``/v1`` call and its scale row)."""
    catalog_sizes: list[int] | None = None
    """Events in the one-call data sets, instead of the mode's."""
    ingest_events: int | None = None
    """Events in the batch ingest cell (and a twentieth of it as single events), instead of
    the mode's."""
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = PLANS[self.mode]
        if self.sizes:
            self.plan.sizes = sorted(self.sizes)
        if self.catalog_sizes:
            self.plan.catalog_sizes = sorted(self.catalog_sizes)
        if self.ingest_events:
            self.plan.ingest_batch_events = self.ingest_events
            self.plan.ingest_single_events = max(1000, self.ingest_events // 20)


_T_START = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ statistics


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def lat_stats(lat_us: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": pct(lat_us, 0.5) / 1000,
        "p99_ms": pct(lat_us, 0.99) / 1000,
        "mean_ms": sum(lat_us) / len(lat_us) / 1000 if lat_us else None,
        "n": len(lat_us),
    }


def rate_stats(events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "rate": events / seconds if seconds > 0 else None,
        "events": events,
        "seconds": seconds,
        **extra,
    }


def fold_done(url: str) -> Callable[[], bool]:
    """A check that every stored event is folded (the deferred fold): SQLite's watermark has
    reached the largest ``seq``; PostgreSQL's ``usage_fold_batches`` is empty."""
    if is_pg(url):
        import psycopg

        def pg_done() -> bool:
            with psycopg.connect(url, autocommit=True) as conn:
                sql = "SELECT NOT EXISTS (SELECT 1 FROM usage_fold_batches)"
                row = conn.execute(sql).fetchone()
                return bool(row and row[0])

        return pg_done
    path = sqlite_path(url)

    def done() -> bool:
        conn = sqlite3.connect(path, timeout=30.0)
        try:
            row = conn.execute(
                "SELECT (SELECT seq FROM usage_fold_state) >= "
                "(SELECT coalesce(max(seq), 0) FROM events)"
            ).fetchone()
            return bool(row[0])
        finally:
            conn.close()

    return done


def db_name(url: str) -> str | None:
    """The PostgreSQL database of ``url`` (None for SQLite)."""
    return url.rsplit("/", 1)[1].split("?", 1)[0] if is_pg(url) else None


def cpu_seconds(pid: int, db_name: str | None = None) -> float:
    """User + system CPU seconds so far of process ``pid`` and its children that are still
    alive (``--workers``), plus, with ``db_name``, every PostgreSQL backend serving that
    database on this machine (``postgres: <user> <db_name> …``), from ``/proc``. Per event, a
    busy machine disturbs it far less than a wall-clock rate."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            mine = int(entry) == pid or int(fields[1]) == pid
            if not mine and db_name is not None:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    words = f.read().split(b"\0")[0].split()
                mine = len(words) >= 3 and words[0] == b"postgres:" and words[2] == db_name.encode()
            if mine:
                total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def blast_stats(res: BlastResult, events_per_request: int) -> dict[str, Any]:
    ok = sum(v for k, v in res.statuses.items() if 200 <= k < 300)
    out = rate_stats(
        ok * events_per_request,
        res.seconds,
        requests=res.requests,
        statuses={str(k): v for k, v in res.statuses.items()},
    )
    out.update(
        {"p50_ms": pct(res.latencies_us, 0.5) / 1000, "p99_ms": pct(res.latencies_us, 0.99) / 1000}
    )
    if ok != res.requests:
        out["error"] = f"{res.requests - ok} of {res.requests} requests failed: {res.statuses}"
    return out


BUDGET = {"seconds": 60.0}
"""Most seconds one latency cell may take; it stops early after at least MIN_SAMPLES."""
MIN_SAMPLES = 3
WARMUP_MAX_S = 300.0
"""A warm-up pass visits every subject once (a cell measures a warm cache, as documented);
only a pass slower than this is cut short, and the cell then says so (``warmup``)."""


def timed_calls(fn: Callable[[str], Any], keys: list[str]) -> list[float]:
    clock = time.perf_counter_ns
    out = []
    deadline = clock() + int(BUDGET["seconds"] * 1e9)
    for k in keys:
        t = clock()
        fn(k)
        done = clock()
        out.append((done - t) / 1000)
        if done > deadline and len(out) >= MIN_SAMPLES:
            break
    return out


def _warm(fn: Callable[[str], Any], keys: list[str]) -> dict[str, Any]:
    """Call ``fn`` once per key (a cold cache costs many times a warm one: on PostgreSQL a
    first value check is dozens of round trips), within :data:`WARMUP_MAX_S`."""
    t0 = time.monotonic()
    done = 0
    for k in keys:
        fn(k)
        done += 1
        if time.monotonic() - t0 > WARMUP_MAX_S:
            break
    seconds = time.monotonic() - t0
    if done < len(keys):
        log(f"    warm-up cut short after {seconds:.0f} s: {done} of {len(keys)} keys")
    return {"keys": done, "of": len(keys), "seconds": round(seconds, 3)}


def http_latency(
    base_url: str,
    paths: list[str],
    warmup: list[str] | None = None,
    expect: int = 200,
    method: str = "GET",
    body: bytes | None = None,
) -> dict[str, Any]:
    """One keep-alive client, one request at a time; latency as the client sees it."""
    conn = Conn(base_url)
    ct = "application/json" if body is not None else None
    try:
        warm = _warm(lambda p: conn.request(method, p, body, ct), warmup or [])
        reqs = [conn.prepare(method, p, body, ct) for p in paths]
        status0, body0 = conn.send_raw(reqs[0])
        if status0 != expect:
            return {"error": f"{method} {paths[0]} -> {status0}: {body0[:300]!r}"}
        clock = time.perf_counter_ns
        lat = []
        bad = 0
        deadline = clock() + int(BUDGET["seconds"] * 1e9)
        for r in reqs:
            t = clock()
            status, _ = conn.send_raw(r)
            done = clock()
            lat.append((done - t) / 1000)
            bad += status != expect
            if done > deadline and len(lat) >= MIN_SAMPLES:
                break
        out = lat_stats(lat)
        if warmup:
            out["warmup"] = warm
        out["sample"] = body0[:300].decode(errors="replace")
        if bad:
            out["error"] = f"{bad} non-{expect} answers"
        return out
    finally:
        conn.close()


def http_throughput(
    base_url: str,
    paths: list[str],
    concurrency: int,
    method: str = "GET",
    body: bytes | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """With ``pid`` (the server's process), also the server's CPU time per request
    (``server_cpu_us``) and the rate that would make one core (``per_core_s``): on a shared
    machine the wall-clock rate says how much CPU the server got; these say what it needs."""
    ct = "application/json" if body is not None else None
    reqs = [build_request(base_url, method, p, body, ct) for p in paths]
    blast(base_url, reqs[: min(len(reqs), 100)], concurrency, BUDGET["seconds"] / 4)  # warm-up
    cpu = cpu_ns(pid) if pid is not None else 0
    res = blast(base_url, reqs, concurrency, BUDGET["seconds"])
    out = blast_stats(res, 1)
    out["checks_per_s"] = out.pop("rate")
    if pid is not None and res.requests:
        out["server_cpu_us"] = (cpu_ns(pid) - cpu) / 1e3 / res.requests
        out["per_core_s"] = 1e6 / out["server_cpu_us"] if out["server_cpu_us"] else None
    return out


# ------------------------------------------------------------------ figures


def figure(
    fid: str,
    label: str,
    kind: str,
    ours: dict[str, Any],
    naive: dict[str, Any] | None,
    floor: dict[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """One row. ``kind`` is "rate" (higher is better) or "latency" (p50/p99, lower is better).

    Ratios are speed ratios, ours ÷ reference, so > 1 means faster than the reference:
    rate: ours/ref; latency: ref_p50/our_p50 (and the same for p99).
    """
    f: dict[str, Any] = {
        "id": fid,
        "label": label,
        "kind": kind,
        "ours": ours,
        "naive": naive,
        "floor": floor,
        **extra,
    }
    for name, ref in (("naive", naive), ("floor", floor)):
        f[f"vs_{name}"] = _ratio(kind, ours, ref)
    return f


def _ratio(kind: str, ours: dict[str, Any] | None, ref: dict[str, Any] | None) -> Any:
    if not ours or not ref or "error" in ours or "error" in ref:
        return None
    try:
        if kind == "rate":
            return ours["rate"] / ref["rate"]
        if kind == "throughput":
            return ours["checks_per_s"] / ref["checks_per_s"]
        return {"p50": ref["p50_ms"] / ours["p50_ms"], "p99": ref["p99_ms"] / ours["p99_ms"]}
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # a missing endpoint or a failing piece must not stop the run
        log(f"    ! {exc.__class__.__name__}: {exc}")
        return {
            "error": f"{exc.__class__.__name__}: {exc}"[:500],
            "trace": traceback.format_exc()[-2000:],
        }


# ------------------------------------------------------------------ databases


class Backend:
    """Where one backend's databases live: SQLite files, or databases on one PostgreSQL server."""

    def __init__(self, name: str, opts: Options) -> None:
        self.name = name
        self.opts = opts
        self.dir = opts.data_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pg: DurablePostgres | None = None
        self.admin_url: str | None = None

    def __enter__(self) -> Backend:
        if self.name == "postgres":
            if self.opts.pg_url:
                self.admin_url = self.opts.pg_url
            else:
                self.pg = DurablePostgres(self.opts.data_dir / "pg-cluster").start()
                self.admin_url = self.pg.url
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pg is not None:
            self.pg.stop()

    def db(self, name: str, *, fresh: bool) -> str:
        if self.name == "sqlite":
            path = self.dir / f"{name}.db"
            if fresh:
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
            return f"sqlite:///{path}"
        assert self.admin_url is not None
        url, _ = pg_admin_database(self.admin_url, name, fresh=fresh)
        return url

    def marker(self, name: str) -> Path:
        where = (
            "local"
            if self.name == "sqlite" or not self.opts.pg_url
            else quote(self.opts.pg_url.rpartition("/")[0], safe="")
        )
        return self.opts.data_dir / "ready" / self.name / where / name

    def ready(self, name: str) -> bool:
        return not self.opts.rebuild and self.marker(name).exists()

    def mark(self, name: str, info: dict[str, Any]) -> None:
        m = self.marker(name)
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_text(json.dumps(info, indent=1))

    def info(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self.marker(name).read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}


# ------------------------------------------------------------------ the run


class Run:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.plan = opts.plan
        self.config = P.write_config(opts.data_dir)
        self.rss_max: dict[str, int] = {}
        self.subjects = D.subjects(self.plan.subjects)
        BUDGET["seconds"] = self.plan.budget_s

    @contextmanager
    def server(
        self, be: Backend, url: str, phase: str, extra_args: list[str] | None = None
    ) -> Iterator[Server]:
        with Server(url, self.config, P.clock_text(), extra_args) as srv:
            try:
                yield srv
            finally:
                assert srv.rss is not None
                srv.rss.stop()
                kib = srv.rss.max_kib
                self.rss_max[f"{be.name}:{phase}"] = kib
                log(f"    server max RSS during {phase}: {kib / 1024:.0f} MiB")

    # -------------------------------------------------------------- ingest

    def ingest(self, be: Backend) -> list[dict[str, Any]]:
        plan = self.plan
        log(
            f"[{be.name}] ingest: {plan.ingest_batch_events:,} events in 1000-event batches, "
            f"{plan.ingest_single_events:,} single events, {plan.concurrency} clients"
        )
        batches = list(D.generate(plan.ingest_batch_events, seed=7, source="bench-ingest"))
        singles = [
            r
            for b in D.generate(
                plan.ingest_single_events, seed=8, batch=1000, source="bench-single"
            )
            for r in b
        ]
        batch_bodies = [D.batch_body(b, "bench-ingest") for b in batches]
        single_bodies = [j.encode() for j in D.to_json(singles, "bench-single")]
        ct_batch = "application/cloudevents-batch+json"
        ct_single = "application/cloudevents+json"

        def post(base: str, path: str, bodies: list[bytes], ct: str) -> list[bytes]:
            return [build_request(base, "POST", path, b, ct) for b in bodies]

        def measure(
            base: str,
            path: str,
            folded: Callable[[], bool] | None = None,
            cpu: Callable[[], float] | None = None,
        ) -> tuple[dict[str, Any], dict[str, Any]]:
            warm = D.batch_body(next(D.generate(100, seed=9, source="bench-warm")), "bench-warm")
            blast(base, post(base, path, [warm], ct_batch), 1)
            cpu0 = cpu() if cpu is not None else 0.0
            rb = blast(base, post(base, path, batch_bodies, ct_batch), plan.concurrency)
            stats_b = blast_stats(rb, 1000)
            if cpu is not None:
                # server (+ its PostgreSQL backends) CPU per acknowledged event, the fold after
                # the blast not included
                stats_b["cpu_us_per_event"] = (cpu() - cpu0) / len(batches) / 1000 * 1e6
            if folded is not None:
                # the deferred fold: when the rollups have caught up with the blast
                t = time.perf_counter()
                while not folded():
                    time.sleep(0.01)
                wait = time.perf_counter() - t
                stats_b["fold_catch_up_s"] = wait
                stats_b["rate_including_fold"] = stats_b["events"] / (rb.seconds + wait)
            rs = blast(base, post(base, path, single_bodies, ct_single), plan.concurrency)
            return stats_b, blast_stats(rs, 1)

        # ours
        url = be.db("bench_ingest", fresh=True)
        ours_b: dict[str, Any]
        ours_s: dict[str, Any]
        try:
            with self.server(be, url, "ingest") as srv:
                ours_b, ours_s = measure(
                    srv.url,
                    "/api/v1/events",
                    fold_done(url),
                    functools.partial(cpu_seconds, srv.pid, db_name(url)),
                )
            stored = count_rows(Store(url), "events")
            expected = plan.ingest_batch_events + plan.ingest_single_events + 100
            if stored != expected:
                ours_b.setdefault("error", f"events table holds {stored}, expected {expected}")
            ours_b["events_stored"] = stored
        except Exception as exc:
            ours_b = ours_s = {"error": f"{exc.__class__.__name__}: {exc}"[:500]}

        log("    ours done")
        # naive: bench/refapp.py's NaiveIngest (json.loads + executemany of INSERT OR IGNORE /
        # ON CONFLICT DO NOTHING on a unique (source, id), one commit, inline in the handler)
        nurl = be.db("bench_naive_ingest", fresh=True)
        NaiveIngest.create_table(nurl)
        with RefApp(ingest_url=nurl) as ref:
            assert ref.proc is not None
            naive_b, naive_s = measure(
                ref.url,
                "/naive/events",
                cpu=functools.partial(cpu_seconds, ref.proc.pid, db_name(nurl)),
            )
            floor_http_b, floor_http_s = measure(ref.url, "/floor/events")

        log("    naive and HTTP floor done")
        # floor: a raw insert of the same events, no dedup, no index, no rollups
        furl = be.db("bench_floor", fresh=True)
        st = Store(furl)
        st.create_table(FLOOR_TABLE, jsonb=False, unique=False, index=False)
        n, secs = st.insert_batches(FLOOR_TABLE, batches, source="bench-ingest")
        floor_b = rate_stats(n, secs, method="COPY" if st.pg else "executemany")
        one = [[r] for r in singles[: plan.floor_single_events]]
        n1, secs1 = st.insert_batches(FLOOR_TABLE, one, source="bench-single-floor")
        floor_s = rate_stats(n1, secs1, method="one row per transaction (one durable commit each)")
        st.close()

        figs = [
            figure(
                "ingest.batch",
                "ingest, 1000-event batches over HTTP (events/s)",
                "rate",
                ours_b,
                naive_b,
                floor_b,
                floor_http=floor_http_b,
            ),
            figure(
                "ingest.single",
                f"ingest, single events, {plan.concurrency} clients (events/s)",
                "rate",
                ours_s,
                naive_s,
                floor_s,
                floor_http=floor_http_s,
            ),
        ]
        ours_cpu, naive_cpu = ours_b.get("cpu_us_per_event"), naive_b.get("cpu_us_per_event")
        if ours_cpu and naive_cpu:
            # CPU per event, the naive reference's ÷ ours (> 1: ours costs less per event)
            figs[0]["cpu_vs_naive"] = naive_cpu / ours_cpu
            log(
                f"    CPU per acknowledged batch event (server + its PostgreSQL backends): "
                f"ours {ours_cpu:.1f} µs, naive {naive_cpu:.1f} µs ({naive_cpu / ours_cpu:.2f}×)"
            )
        if be.name == "postgres":
            for n in plan.ingest_replicas:
                ours_n = guarded(functools.partial(self.ingest_replicated, be, n))
                figs.append(
                    figure(
                        f"ingest.batch.replicas.{n}",
                        f"ingest, 1000-event batches over HTTP, {n} worker process(es) (events/s)",
                        "rate",
                        ours_n,
                        naive_b,
                        floor_b,
                        replicas=n,
                    )
                )
        return figs

    def ingest_replicated(self, be: Backend, n: int) -> dict[str, Any]:
        """Batch ingest into a fresh database through ``allotment serve --workers n`` (each
        worker its own process, pool and group-commit writer, all on one PostgreSQL)."""
        plan = self.plan
        events = plan.ingest_replica_events
        log(f"[{be.name}] ingest with {n} worker process(es): {events:,} events")
        batches = D.generate(plan.ingest_replica_events, seed=11, source=f"bench-replicas-{n}")
        bodies = [D.batch_body(b, f"bench-replicas-{n}") for b in batches]
        url = be.db(f"bench_ingest_replicas_{n}", fresh=True)
        ct = "application/cloudevents-batch+json"
        with self.server(be, url, f"ingest-replicas-{n}", ["--workers", str(n)]) as srv:
            reqs = [build_request(srv.url, "POST", "/api/v1/events", b, ct) for b in bodies]
            # every worker warm, with events of their own (not retries of the measured ones)
            warm_events = max(2, n * 2) * 1000
            warm = [
                build_request(srv.url, "POST", "/api/v1/events", D.batch_body(b, "warm"), ct)
                for b in D.generate(warm_events, seed=12, source=f"bench-replicas-warm-{n}")
            ]
            blast(srv.url, warm, plan.concurrency)
            server0 = cpu_seconds(srv.pid, db_name(url))
            client0 = time.process_time()
            res = blast(srv.url, reqs, plan.concurrency)
            server_cpu = cpu_seconds(srv.pid, db_name(url)) - server0
            client_cpu = time.process_time() - client0
        out = blast_stats(res, 1000)
        # whether more replicas could go faster here: the CPU they took per event (workers +
        # their PostgreSQL backends) and how many of the machine's cores the server side and
        # the load generator (this process) kept busy over the blast
        acked = out["events"] or 1
        out["cpu_us_per_event"] = server_cpu / acked * 1e6
        out["server_cores_busy"] = server_cpu / res.seconds
        out["client_cores_busy"] = client_cpu / res.seconds
        out["machine_cores"] = os.cpu_count()
        log(
            f"    {n} worker(s): {out['rate']:,.0f} ev/s, server + backends "
            f"{out['cpu_us_per_event']:.1f} µs CPU an event, cores busy: server "
            f"{out['server_cores_busy']:.2f} + load generator {out['client_cores_busy']:.2f} "
            f"of {out['machine_cores']}"
        )
        stored = count_rows(Store(url), "events")
        out["events_stored"] = stored  # the warm-up's events included
        if stored != plan.ingest_replica_events + warm_events:
            out.setdefault("error", f"events table holds {stored}, expected all")
        return out

    # -------------------------------------------------------------- data sets

    def dataset(self, be: Backend, size: int) -> tuple[str, str, dict[str, Any]]:
        """(project database URL, naive database URL, build info), built once and cached."""
        fp = P.schema_fingerprint()
        name = f"allot_{size}_{self.plan.subjects}_{fp}"
        nname = f"naive_{size}_{self.plan.subjects}"
        info: dict[str, Any] = {}
        if be.ready(name):
            url = be.db(name, fresh=False)
            info["project"] = {"cached": True, **be.info(name)}
        else:
            url = be.db(name, fresh=True)
            loader = self.opts.loader
            if loader == "auto":
                loader = "service" if size <= 200_000 else "bulk"
            log(f"[{be.name}] building data set {name}: {size:,} events ({loader} loader)")
            container = P.build_container(url, self.config)
            try:
                if loader == "service":
                    stored, secs = P.load_events_service(
                        container, size, self.plan.subjects, self.plan.load_batch, log
                    )
                    checked = bulk.verify(container, self.subjects[:6])
                else:
                    res = bulk.load(container, size, self.plan.subjects, log)
                    stored, secs = res["events"], res["seconds"]
                    checked = bulk.verify(container, self.subjects[:6])
            finally:
                container.close()
            log(
                f"    {stored:,} events in {secs:.1f} s ({stored / secs:,.0f} events/s); "
                f"rollups verified on {len(checked['subjects_checked'])} subjects"
            )
            with self.server(be, url, f"setup-{size}") as srv:
                t = time.perf_counter()
                setup = P.setup_entitlements(srv.url, self.subjects)
                setup["seconds"] = time.perf_counter() - t
            built = {
                "events": stored,
                "loader": loader,
                "verified": checked,
                "load_seconds": secs,
                "load_rate": stored / secs,
                "load_batch": self.plan.load_batch,
                "setup": setup,
            }
            be.mark(name, built)
            info["project"] = {"cached": False, **built}
        if be.ready(nname):
            nurl = be.db(nname, fresh=False)
            info["naive"] = {"cached": True, **be.info(nname)}
        else:
            nurl = be.db(nname, fresh=True)
            log(f"[{be.name}] building naive reference {nname}")
            st = Store(nurl)
            st.create_table(NAIVE_TABLE, jsonb=True, unique=False, index=False)
            n, secs = st.insert_batches(
                NAIVE_TABLE, D.generate(size, batch=10_000, n_subjects=self.plan.subjects)
            )
            t = time.perf_counter()
            st.create_index(NAIVE_TABLE)
            st.ensure_point_table(self.subjects)
            built = {"events": n, "insert_seconds": secs, "index_seconds": time.perf_counter() - t}
            st.close()
            be.mark(nname, built)
            info["naive"] = {"cached": False, **built}
        return url, nurl, info

    # -------------------------------------------------------------- value checks + queries

    def reads(self, be: Backend, size: int, with_queries: bool) -> list[dict[str, Any]]:
        plan = self.plan
        url, nurl, info = self.dataset(be, size)
        rng = random.Random(size)
        subjects = self.subjects
        cycle = [subjects[rng.randrange(len(subjects))] for _ in range(plan.value_http)]
        heavy = [D.HEAVY_SUBJECT] * plan.value_heavy
        tp = [subjects[i % len(subjects)] for i in range(plan.value_throughput)]
        tag = f"{size:,} events"
        figs: list[dict[str, Any]] = []
        log(f"[{be.name}] value checks and queries at {tag}")

        q_from, q_to = quote(D.rfc3339(D.T0)), quote(D.rfc3339(D.T_END))
        qbase = f"/api/v1/meters/{D.METER_SLUG}/query?from={q_from}&to={q_to}&windowSize=DAY"

        with self.server(be, url, f"reads-{size}") as srv, RefApp(db_url=nurl) as ref:
            vp = P.value_path
            warm = [vp(s) for s in subjects]
            ours = guarded(lambda: http_latency(srv.url, [vp(s) for s in cycle], warm))
            naive = guarded(lambda: http_latency(ref.url, [f"/naive/value/{s}" for s in cycle]))
            floor = guarded(lambda: http_latency(ref.url, ["/floor/value"] * len(cycle)))
            figs.append(
                figure(
                    f"value.http.{size}",
                    f"value check over HTTP, 1 keep-alive client, {tag}",
                    "latency",
                    ours,
                    naive,
                    floor,
                    size=size,
                )
            )
            ours = guarded(lambda: http_latency(srv.url, [vp(s) for s in heavy]))
            naive = guarded(lambda: http_latency(ref.url, [f"/naive/value/{s}" for s in heavy]))
            figs.append(
                figure(
                    f"value.http.heavy.{size}",
                    f"value check over HTTP, heavy subject, {tag}",
                    "latency",
                    ours,
                    naive,
                    floor,
                    size=size,
                )
            )
            ours = guarded(lambda: http_throughput(srv.url, [vp(s) for s in tp], plan.concurrency))
            naive = guarded(
                lambda: http_throughput(
                    ref.url,
                    [f"/naive/value/{s}" for s in tp[: max(200, len(tp) // 10)]],
                    plan.concurrency,
                )
            )
            floor_tp = guarded(
                lambda: http_throughput(ref.url, ["/floor/value"] * len(tp), plan.concurrency)
            )
            figs.append(
                figure(
                    f"value.http.throughput.{size}",
                    f"value checks/s over HTTP, {plan.concurrency} clients, {tag}",
                    "throughput",
                    ours,
                    naive,
                    floor_tp,
                    size=size,
                )
            )

            log("    value checks over HTTP done")
            figs += self.authorize(srv, ref, tag, size, subjects, cycle, floor, floor_tp)
            if with_queries:
                log(f"[{be.name}] meter queries at {tag}")
                one = [f"{qbase}&subject={s}" for s in cycle[: plan.query_one]]
                ours = guarded(lambda: http_latency(srv.url, one, one[:20]))
                naive = guarded(
                    lambda: http_latency(
                        ref.url, [f"/naive/query/one?subject={s}" for s in cycle[: plan.query_one]]
                    )
                )
                figs.append(
                    figure(
                        f"query.one.{size}",
                        f"meter query, one subject, 30 days, DAY windows, {tag}",
                        "latency",
                        ours,
                        naive,
                        floor,
                        size=size,
                    )
                )
                allq = f"{qbase}&groupBy=subject&groupBy=model"
                ours = guarded(lambda: http_latency(srv.url, [allq] * plan.query_all, [allq]))
                naive = guarded(
                    lambda: http_latency(ref.url, ["/naive/query/all"] * plan.query_all_naive)
                )
                figs.append(
                    figure(
                        f"query.all.{size}",
                        f"meter query, all subjects × model, DAY windows, {tag}",
                        "latency",
                        ours,
                        naive,
                        floor,
                        size=size,
                    )
                )

        # in process: the service method on a Container built on the same database
        log(f"[{be.name}] in-process value checks at {tag}")
        st = Store(nurl)

        def inproc(keys: list[str]) -> dict[str, Any]:
            container = P.build_container(url, self.config)
            try:
                fn, name = P.value_function(container)
                warm = _warm(fn, subjects)
                out = lat_stats(timed_calls(fn, keys))
                out["warmup"] = warm
                out["method"] = name
                out["sample"] = repr(fn(keys[0]))[:300]
                return out
            finally:
                container.close()

        def naive_inproc(keys: list[str]) -> dict[str, Any]:
            def fn(s: str) -> Any:
                return st.naive_usage(NAIVE_TABLE, s, D.T0_US, D.T_END_US)

            fn(keys[0])
            return lat_stats(timed_calls(fn, keys))

        def floor_inproc(keys: list[str]) -> dict[str, Any]:
            for s in subjects:
                st.point_read(s)
            out = lat_stats(timed_calls(st.point_read, keys))
            out["method"] = "one primary-key row read (bench_point, 1000 rows)"
            return out

        keys = (
            cycle[: plan.value_inproc]
            if len(cycle) >= plan.value_inproc
            else [subjects[rng.randrange(len(subjects))] for _ in range(plan.value_inproc)]
        )
        ours = guarded(lambda: inproc(keys))
        naive = guarded(lambda: naive_inproc(keys))
        floor = guarded(lambda: floor_inproc(keys))
        figs.append(
            figure(
                f"value.inproc.{size}",
                f"value check in process (service call), {tag}",
                "latency",
                ours,
                naive,
                floor,
                size=size,
            )
        )
        ours = guarded(lambda: inproc(heavy))
        naive = guarded(lambda: naive_inproc(heavy))
        figs.append(
            figure(
                f"value.inproc.heavy.{size}",
                f"value check in process, heavy subject, {tag}",
                "latency",
                ours,
                naive,
                floor,
                size=size,
            )
        )
        st.close()
        for f in figs:
            f["dataset"] = info
        return figs

    def authorize(
        self,
        srv: Server,
        ref: RefApp,
        tag: str,
        size: int,
        subjects: list[str],
        cycle: list[str],
        floor: dict[str, Any],
        tp_floor: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """One check, one consume, one reserve per call (bench/authorize.py); the floors are
        the value check's (the bare endpoint, measured just before)."""
        plan = self.plan
        url, ref_url = srv.url, ref.url
        ref_pid = ref.proc.pid if ref.proc is not None else None
        log(f"    authorize at {tag}")
        customers = subjects[: min(len(subjects), 20)]
        names = A.setup(url, D.METER_SLUG, customers)
        payload = A.body(names)
        calls = [customers[i % len(customers)] for i in range(len(cycle))]
        ours_paths = [f"/v1/customers/{c}/authorize" for c in calls]
        naive_paths = [f"/naive/authorize/{c}" for c in calls]
        A.check(url, ours_paths[0], payload)
        lat = guarded(lambda: http_latency(url, ours_paths, method="POST", body=payload))
        naive = guarded(lambda: http_latency(ref_url, naive_paths, method="POST", body=payload))
        # a cell long enough to cover many group commits (quick mode's value cell, 500
        # requests, is 0.2–0.7 s of authorizes), within the customers' frozen-clock minute:
        # every call consumes one of RATE_LIMIT per customer, the latency cell included
        n = max(
            100,
            min(
                len(ours_paths),
                max(plan.value_throughput, 2000),
                A.RATE_LIMIT * len(customers) - len(ours_paths) - 200,
            ),
        )
        tp = guarded(
            lambda: http_throughput(url, ours_paths[:n], plan.concurrency, "POST", payload, srv.pid)
        )
        tp_naive = guarded(
            lambda: http_throughput(
                ref_url, naive_paths[:n], plan.concurrency, "POST", payload, ref_pid
            )
        )
        log(
            f"    server CPU per authorize ({plan.concurrency} clients): ours"
            f" {tp.get('server_cpu_us', 0):.0f} µs, naive {tp_naive.get('server_cpu_us', 0):.0f} µs"
        )
        return [
            figure(
                f"authorize.http.{size}",
                f"authorize over HTTP (1 check, 1 consume, 1 reserve), 1 client, {tag}",
                "latency",
                lat,
                naive,
                floor,
                size=size,
            ),
            figure(
                f"authorize.http.throughput.{size}",
                f"authorizes/s over HTTP, {plan.concurrency} clients, {tag}",
                "throughput",
                tp,
                tp_naive,
                tp_floor,
                size=size,
            ),
        ]

    def authorize_interleaved(
        self, be: Backend, lo: int, hi: int, figs: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The authorize latency at the smallest and the largest data set measured in the
        same minutes: both servers up (a catalog of their own, made afresh), alternating
        rounds (bench/authorize.py ``interleaved``). Each ``authorize.http.<size>`` figure's
        ``ours`` becomes the p50/p99 over all its rounds (``method: interleaved``; the cell
        measured alone, minutes apart, kept as ``sequential``), so ``scale.authorize.http``
        compares like with like; ``ours.server_cpu_us`` is the server's CPU per call over
        the rounds (PostgreSQL: ``ours.server_and_db_cpu_us`` with its database's backends).
        Returns, for the scale figure, ``paired`` (the median of the rounds' own ratios,
        largest ÷ smallest, round by round), ``cpu_ratio`` and ``cpu_with_db_ratio`` (largest
        ÷ smallest of those CPU figures)."""
        plan = self.plan
        rounds, per_round = plan.authorize_rounds, plan.authorize_round_calls
        log(
            f"[{be.name}] authorize interleaved at {lo:,} and {hi:,} events:"
            f" {rounds} rounds of {per_round} calls each"
        )
        by_id = {f["id"]: f for f in figs}
        with contextlib.ExitStack() as stack:
            sides = []
            for size in (lo, hi):
                url, _, _ = self.dataset(be, size)
                srv = stack.enter_context(self.server(be, url, f"authorize-{size}"))
                customers = self.subjects[: min(len(self.subjects), 20)]
                names = A.setup(srv.url, D.METER_SLUG, customers)
                paths = [f"/v1/customers/{c}/authorize" for c in customers]
                A.check(srv.url, paths[0], A.body(names))
                pid, db = srv.pid, db_name(url)
                clocks: dict[str, Callable[[], float]] = {"server": lambda p=pid: cpu_ns(p) / 1e9}
                if db is not None:  # the server and its database's backends (tick-grained)
                    clocks["with_db"] = lambda p=pid, d=db: cpu_seconds(p, d)
                sides.append(A.Side(srv.url, paths, A.body(names), clocks=clocks))

            def measure() -> dict[str, Any]:
                A.interleaved(sides, rounds, per_round, warm=2 * len(sides[0].paths))
                return {}

            res = guarded(measure)
        if "error" in res:
            for size in (lo, hi):
                if f"authorize.http.{size}" in by_id:
                    by_id[f"authorize.http.{size}"]["interleaved_error"] = res["error"]
            return {}
        p50s: dict[int, list[float]] = {}
        for size, side in zip((lo, hi), sides, strict=True):
            f = by_id.get(f"authorize.http.{size}")
            if f is None:
                continue
            ours = lat_stats([v for r in side.rounds_us for v in r])
            p50s[size] = [pct(r, 0.5) / 1000 for r in side.rounds_us]
            seq = f["ours"]
            ours.update(
                method="interleaved",
                rounds=rounds,
                per_round=per_round,
                round_p50_ms=[round(v, 4) for v in p50s[size]],
                sequential={k: seq.get(k) for k in ("p50_ms", "p99_ms", "n", "error") if k in seq},
            )
            calls = sum(len(r) for r in side.rounds_us)
            if calls:
                ours["server_cpu_us"] = side.spent["server"] * 1e6 / calls
                if "with_db" in side.spent:
                    ours["server_and_db_cpu_us"] = side.spent["with_db"] * 1e6 / calls
            if side.bad:
                ours["error"] = f"{side.bad} non-200 answers"
            f["ours"] = ours
            f["label"] += f" (interleaved with {hi if size == lo else lo:,})"
            for name in ("naive", "floor"):
                f[f"vs_{name}"] = _ratio(f["kind"], ours, f[name])
        got = {n: by_id[f"authorize.http.{n}"]["ours"]["p50_ms"] for n in p50s}
        shown = ", ".join(f"{n:,}: {v:.2f} ms" for n, v in got.items())
        log(f"    authorize p50 (interleaved): {shown}")
        if len(p50s) < 2:
            return {}
        ratios = [b / a for a, b in zip(p50s[lo], p50s[hi], strict=True) if a > 0]
        mine = [by_id[f"authorize.http.{n}"]["ours"] for n in (lo, hi)]
        out: dict[str, Any] = {"paired": pct(ratios, 0.5) if ratios else None}
        pairs = (("cpu_ratio", "server_cpu_us"), ("cpu_with_db_ratio", "server_and_db_cpu_us"))
        for name, key in pairs:
            a, b = mine[0].get(key), mine[1].get(key)
            if a and b:
                out[name] = b / a
        return {"authorize.http": out}

    # -------------------------------------------------------------- all

    def backend(self, name: str) -> dict[str, Any]:
        t = time.perf_counter()
        out: dict[str, Any] = {"figures": []}
        only = self.opts.only
        sizes = self.plan.sizes if only is None else []
        catalog_sizes = self.plan.catalog_sizes if only in (None, "catalog") else []
        paired: dict[str, dict[str, Any]] = {}
        with Backend(name, self.opts) as be:
            out["engine"] = engine_version(be)
            if only in (None, "ingest"):
                out["figures"] += self.ingest(be)
            if only in (None, "notify"):
                out["figures"] += self.notify(be)
            for size in sizes:
                out["figures"] += self.reads(be, size, with_queries=size == sizes[-1])
            if len(sizes) >= 2:
                paired = self.authorize_interleaved(be, sizes[0], sizes[-1], out["figures"])
            for size in catalog_sizes:
                out["figures"] += self.catalog(be, size)
        out["figures"] += scale_figures(out["figures"], sizes, paired=paired)
        out["figures"] += scale_figures(out["figures"], catalog_sizes, ("catalog.inproc",))
        out["server_max_rss_mib"] = {
            k.split(":", 1)[1]: v / 1024
            for k, v in self.rss_max.items()
            if k.startswith(name + ":")
        }
        out["seconds"] = time.perf_counter() - t
        return out

    # -------------------------------------------------------------- notification cost

    def notify(self, be: Backend) -> list[dict[str, Any]]:
        """Ingest with 1000 notification rules against the same process without any
        (bench/notify_cost.py); the ratio row is the issue-19 figure."""
        plan = self.plan
        log(
            f"[{be.name}] notification cost: {plan.notify_batches} × 1000 events per phase, "
            f"{plan.notify_rounds} round(s), {plan.notify_rules} rules"
        )
        url = be.db("bench_notify", fresh=True)
        res = guarded(
            lambda: notify_cost.measure(
                url, self.config, log, batches=plan.notify_batches, rounds=plan.notify_rounds,
                subjects=plan.notify_subjects, rules=plan.notify_rules,
            )
        )  # fmt: skip
        ours = res.get("ours", res)
        baseline = res.get("baseline")
        return [
            figure(
                "notify.ingest",
                f"ingest in process with {plan.notify_rules} notification rules (events/s; "
                "reference: no rule, same process)",
                "rate",
                ours,
                None,
                None,
                baseline=baseline,
                setup=res.get("setup"),
            ),
            {
                "id": "notify.ingest.ratio",
                "kind": "scale",
                "value": res.get("ratio"),
                "cpu_ratio": res.get("cpu_ratio"),
                "write_ratio": res.get("write_ratio"),
                "label": f"notify.ingest: events/s with {plan.notify_rules} rules ÷ without "
                "(target ≥ 0.9); writes alone "
                + (f"{res['write_ratio']:.2f}" if "write_ratio" in res else "–")
                + ", CPU per event "
                + (f"{res['cpu_ratio']:.2f}" if "cpu_ratio" in res else "–"),
            },
        ]

    # -------------------------------------------------------------- the one /v1 call

    def catalog_dataset(self, be: Backend, size: int) -> tuple[str, dict[str, Any]]:
        name = f"catalog_{size}_{P.schema_fingerprint()}"
        if be.ready(name):
            return be.db(name, fresh=False), {"cached": True, **be.info(name)}
        url = be.db(name, fresh=True)
        log(f"[{be.name}] building the one-call data set {name}: {size:,} events")
        container = P.build_container(url, self.config)
        st = Store(url)
        try:
            built = catalog_call.build(container, st, size, log)
        finally:
            st.close()
            container.close()
        be.mark(name, built)
        return url, {"cached": False, **built}

    def catalog(self, be: Backend, size: int) -> list[dict[str, Any]]:
        """GET /v1/customers/{ref}/entitlements in process (10 features, 3 budgets) beside one
        SQL aggregate over the raw events."""
        url, info = self.catalog_dataset(be, size)
        tag = f"{size:,} events"
        log(f"[{be.name}] the one /v1 call in process at {tag}")
        refs = [catalog_call.customer(i) for i in range(catalog_call.CUSTOMERS)]
        rng = random.Random(3)
        keys = [refs[rng.randrange(len(refs))] for _ in range(self.plan.catalog_calls)]
        st = Store(url)

        def ours() -> dict[str, Any]:
            container = P.build_container(url, self.config)
            try:
                fn = container.subscriptions.entitlements
                warm = _warm(fn, refs)
                out = lat_stats(timed_calls(fn, keys))
                out["warmup"] = warm
                out["method"] = "container.subscriptions.entitlements(ref)"
                out["sample"] = repr(fn(keys[0]))[:300]
                return out
            finally:
                container.close()

        def naive() -> dict[str, Any]:
            fn = catalog_call.naive_call(st)
            fn(keys[0])
            out = lat_stats(timed_calls(fn, keys))
            out["method"] = "plan values in memory + one GROUP BY type over raw events"
            return out

        def floor() -> dict[str, Any]:
            st.ensure_point_table(refs)
            for r in refs:
                st.point_read(r)
            out = lat_stats(timed_calls(st.point_read, keys))
            out["method"] = "one primary-key row read (bench_point, 100 rows)"
            return out

        figs = [
            figure(
                f"catalog.inproc.{size}",
                f"GET /v1/customers/{{ref}}/entitlements in process (10 features, 3 budgets), "
                f"{tag}",
                "latency",
                guarded(ours),
                guarded(naive),
                guarded(floor),
                size=size,
                dataset=info,
            )
        ]
        if self.plan.catalog_http:
            paths = [f"/v1/customers/{k}/entitlements" for k in keys]
            warm = [f"/v1/customers/{r}/entitlements" for r in refs]
            with self.server(be, url, f"catalog-{size}") as srv, RefApp() as ref:
                http = guarded(lambda: http_latency(srv.url, paths, warm))
                bare = guarded(lambda: http_latency(ref.url, ["/floor/value"] * len(paths)))
            figs.append(
                figure(
                    f"catalog.http.{size}",
                    f"GET /v1/customers/{{ref}}/entitlements over HTTP, 1 keep-alive client, {tag}",
                    "latency",
                    http,
                    None,
                    bare,
                    size=size,
                )
            )
        st.close()
        return figs

    def prepare(self) -> None:
        """Build and cache every data set of the plan (what a run would build), measure nothing."""
        for name in self.opts.backends:
            with Backend(name, self.opts) as be:
                for size in self.plan.sizes:
                    self.dataset(be, size)
                for size in self.plan.catalog_sizes:
                    self.catalog_dataset(be, size)

    def run(self) -> dict[str, Any]:
        t = time.perf_counter()
        result: dict[str, Any] = {"meta": meta(self.opts), "backends": {}}
        for name in self.opts.backends:
            result["backends"][name] = self.backend(name)
        result["meta"]["seconds"] = time.perf_counter() - t
        return result


def scale_figures(
    figs: list[dict[str, Any]],
    sizes: list[int],
    stems: tuple[str, ...] = (
        "value.http",
        "value.inproc",
        "value.http.heavy",
        "value.inproc.heavy",
        "authorize.http",
    ),
    paired: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """p50 at the largest data set ÷ p50 at the smallest (the target: ≤ 1.2). ``paired``:
    per stem measured interleaved, what that measurement adds (``paired``, the CPU ratios),
    kept beside the value with ``method: interleaved``."""
    if len(sizes) < 2:
        return []
    lo, hi = sizes[0], sizes[-1]
    by_id = {f["id"]: f for f in figs}
    out = []
    for stem in stems:
        a, b = by_id.get(f"{stem}.{lo}"), by_id.get(f"{stem}.{hi}")
        try:
            ratio = b["ours"]["p50_ms"] / a["ours"]["p50_ms"]  # type: ignore[index]
        except (KeyError, TypeError, ZeroDivisionError):
            ratio = None
        row: dict[str, Any] = {
            "id": f"scale.{stem}",
            "kind": "scale",
            "value": ratio,
            "label": f"{stem}: p50 at {hi:,} ÷ p50 at {lo:,} events",
        }
        if paired and stem in paired:
            row.update(method="interleaved", **paired[stem])
            row["label"] += " (interleaved)"
        out.append(row)
    return out


def engine_version(be: Backend) -> str:
    if be.name == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    import psycopg

    assert be.admin_url is not None
    with psycopg.connect(be.admin_url) as c:
        row = c.execute("SHOW server_version").fetchone()
        settings = {
            k: c.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
            for k in ("fsync", "synchronous_commit", "shared_buffers")
        }
    return f"PostgreSQL {row[0] if row else '?'} " + " ".join(
        f"{k}={v}" for k, v in settings.items()
    )


def fsync_probe(directory: Path, n: int = 200) -> dict[str, float]:
    """fdatasync after a 4 KiB append in the data directory: the durability floor right now
    (limits.md measured 0.21–0.25 ms at p50 on an idle machine)."""
    path = directory / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter_ns()
            os.fdatasync(fd)
            lat.append((time.perf_counter_ns() - t) / 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"p50_ms": pct(lat, 0.5) / 1000, "p99_ms": pct(lat, 0.99) / 1000}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


def meta(opts: Options) -> dict[str, Any]:
    def cmd(*args: str) -> str:
        try:
            return subprocess.run(
                args, capture_output=True, text=True, check=False, cwd=P.ROOT
            ).stdout.strip()
        except OSError:
            return ""

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "mode": opts.mode,
        "plan": asdict(opts.plan),
        "backends": opts.backends,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": cmd("git", "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(cmd("git", "status", "--porcelain", "--untracked-files=no")),
        "machine": {
            "cpu": cpu,
            "cpus": os.cpu_count(),
            "memory": mem,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
        "data_dir": str(opts.data_dir),
        "fdatasync_4k": fsync_probe(opts.data_dir),
        "loadavg_at_start": loadavg(),
        "data_window": [D.rfc3339(D.T0), D.rfc3339(D.T_END)],
        "clock": P.clock_text(),
    }
