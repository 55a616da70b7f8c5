"""Ingest throughput over HTTP against a real ``allotment serve`` (not collected by pytest).

    .venv/bin/python tests/perf_ingest.py --backend sqlite --batches 200 --singles 5000
    .venv/bin/python tests/perf_ingest.py --backend sqlite --preload 1000000
    .venv/bin/python tests/perf_ingest.py --backend postgres --preload 1000000 --profile /tmp/pg.svg

Uses the benchmark harness's data generator, HTTP client and processes (``bench/``) so the
events, bodies and server options are the ones ``python -m bench`` measures: 1000-event
``application/cloudevents-batch+json`` bodies from ``--conns`` keep-alive clients, then single
``application/cloudevents+json`` events from the same number of clients. ``--preload N`` first
bulk-loads N events (``bench.bulk``, cached per schema) so the dedup index is not empty. After
the run the stored events and the rollup counts are checked (nothing lost, nothing doubled).
``--profile FILE`` records the server with py-spy (``PYSPY`` = path of the py-spy binary).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.httpc import blast, build_request  # noqa: E402
from bench.procs import DurablePostgres, Server  # noqa: E402
from bench.stores import Store  # noqa: E402

from bench import data as D  # noqa: E402
from bench import project as P  # noqa: E402


def _counts(url: str) -> tuple[int, int]:
    st = Store(url)
    try:
        (n,) = st.q("SELECT count(*) FROM events")[0]
        (rolled,) = st.q("SELECT coalesce(sum(count), 0) FROM usage_minute")[0]
        return int(n), int(rolled)
    finally:
        st.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--singles", type=int, default=5000)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--preload", type=int, default=0)
    ap.add_argument("--profile", help="py-spy flame graph of the server (raw stacks if .txt)")
    ap.add_argument("--profile-phase", choices=["batch", "single"], default="batch")
    ap.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "allotment-perf"))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    data = Path(args.data_dir) / args.backend
    data.mkdir(parents=True, exist_ok=True)
    config = P.write_config(data)
    fp = P.schema_fingerprint()
    pg: DurablePostgres | None = None
    try:
        if args.backend == "sqlite":
            url = f"sqlite:///{data / 'perf.db'}"
            for suffix in ("", "-wal", "-shm"):
                Path(str(data / "perf.db") + suffix).unlink(missing_ok=True)
            if args.preload:
                tmpl = data / f"preload-{args.preload}-{fp}.db"
                if not tmpl.exists():
                    _preload(f"sqlite:///{tmpl}", args.preload, config)
                shutil.copyfile(tmpl, data / "perf.db")
        else:
            pg = DurablePostgres(Path(args.data_dir) / "pg-cluster").start()
            import psycopg

            tname = f"preload_{args.preload}_{fp}"
            if args.preload:
                turl, existed = pg.database(tname)
                if not existed:
                    _preload(turl, args.preload, config)
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute('DROP DATABASE IF EXISTS "perf" WITH (FORCE)')
                if args.preload:
                    conn.execute(f'CREATE DATABASE "perf" TEMPLATE "{tname}"')
                else:
                    conn.execute('CREATE DATABASE "perf"')
            url = pg.url.rpartition("/")[0] + "/perf"
        before, _ = _counts(url) if args.preload else (0, 0)

        batches = list(D.generate(args.batches * 1000, seed=args.seed, source=f"perf-{args.seed}"))
        bodies = [D.batch_body(b, f"perf-{args.seed}") for b in batches]
        singles = [
            r
            for b in D.generate(args.singles, seed=args.seed + 1, source=f"perf1-{args.seed}")
            for r in b
        ]
        single_bodies = [j.encode() for j in D.to_json(singles, f"perf1-{args.seed}")]
        with Server(url, config, P.clock_text()) as srv:
            reqs = [
                build_request(
                    srv.url, "POST", "/api/v1/events", b, "application/cloudevents-batch+json"
                )
                for b in bodies
            ]
            warm = D.batch_body(next(D.generate(100, seed=99, source="perf-warm")), "perf-warm")
            blast(
                srv.url,
                [
                    build_request(
                        srv.url,
                        "POST",
                        "/api/v1/events",
                        warm,
                        "application/cloudevents-batch+json",
                    )
                ],
                1,
            )
            spy = _spy(args, srv.pid) if args.profile_phase == "batch" else None
            cpu0 = _cpu(srv.pid)
            rb = blast(srv.url, reqs, args.conns)
            cpu1 = _cpu(srv.pid)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=60)
            sreqs = [
                build_request(srv.url, "POST", "/api/v1/events", b, "application/cloudevents+json")
                for b in single_bodies
            ]
            if args.profile_phase == "single":
                spy = _spy(args, srv.pid)
            cpu2, own2 = _cpu(srv.pid), time.process_time()
            rs = blast(srv.url, sreqs, args.conns)
            cpu3, own3 = _cpu(srv.pid), time.process_time()
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=60)
        after, rolled = _counts(url)
        expected = before + args.batches * 1000 + args.singles + 100
        ok = rb.statuses == {204: len(reqs)} and rs.statuses == {204: len(sreqs)}
        print(f"backend={args.backend} preload={args.preload:,} conns={args.conns}")
        lat = sorted(rb.latencies_us)
        print(
            f"batch:  {args.batches * 1000 / rb.seconds:,.0f} events/s "
            f"({rb.seconds:.2f} s, p50 {lat[len(lat) // 2] / 1000:.1f} ms, "
            f"server CPU {(cpu1 - cpu0) / (args.batches * 1000) * 1e6:.2f} µs/event) {rb.statuses}"
        )
        lat = sorted(rs.latencies_us)
        if lat:
            print(
                f"single: {args.singles / rs.seconds:,.0f} events/s "
                f"({rs.seconds:.2f} s, p50 {lat[len(lat) // 2] / 1000:.2f} ms, "
                f"server CPU {(cpu3 - cpu2) / args.singles * 1e6:.0f} µs/event, "
                f"load generator CPU {(own3 - own2) / args.singles * 1e6:.0f} µs/event) "
                f"{rs.statuses}"
            )
        print(f"stored {after:,} (expected {expected:,}); rollup count {rolled:,}")
        if after != expected or rolled != after or not ok:
            print("MISMATCH", file=sys.stderr)
            return 1
        return 0
    finally:
        if pg is not None:
            pg.stop()


def _spy(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    if not args.profile:
        return None
    spy = subprocess.Popen(
        [
            os.environ.get("PYSPY", "py-spy"), "record", "-p", str(pid), "-o", args.profile,
            "-r", "200", "--threads", "--nonblocking",
            "-f", "raw" if args.profile.endswith(".txt") else "flamegraph",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    return spy


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _preload(url: str, n: int, config: Path) -> None:
    from bench import bulk

    c = P.build_container(url, config)
    try:
        bulk.load(c, n, D.SUBJECTS, lambda m: print(m, flush=True))
    finally:
        c.close()


if __name__ == "__main__":
    raise SystemExit(main())
