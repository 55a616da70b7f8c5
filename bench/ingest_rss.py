"""The server's resident memory through a long ingest (issue 18: < 1 GiB through 10 M events).

    .venv/bin/python -m bench.ingest_rss [--events 10000000] [--backend sqlite|postgres]
        [--clients 16] [--data-dir DIR] [--pg-url URL] [--out FILE]

``allotment serve`` on a fresh database (as ``bench/run.py`` starts it: the bench's meter
config, the frozen clock at the end of the data window), then ``--clients`` keep-alive
connections POST the bench's events (``bench/data.py``: 1 000 subjects, 30 days, one heavy
subject) as 1000-event ``application/cloudevents-batch+json`` bodies. The bodies are
generated on the fly, one per request, so the client holds a few batches, not the whole run
(``python -m bench`` builds every body first and also runs the naive app at the same size,
which is why it is not the tool for 10 M events). Every second the server's ``VmRSS`` is
read from ``/proc``; every ~10 s a progress line (events acknowledged, events/s over the
last interval and overall, RSS now and peak). After the last answer it waits for the
deferred fold to catch up (``bench.run.fold_done``), sampling RSS the same way, then checks
the stored count and writes one JSON: peak RSS during the ingest and during the fold
catch-up (``--fold-timeout``: the most it waits; then the events still unfolded are
reported), the rates (acknowledged, and including the fold once it caught up), durations,
the server's CPU per event, the load average, and the progress samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import data as D
from bench import project as P
from bench.httpc import _parse_head, build_request
from bench.procs import RssSampler, Server
from bench.run import Backend, Options, cpu_seconds, db_name, fold_done, loadavg, meta
from bench.stores import Store, count_rows, is_pg, sqlite_path

CT_BATCH = "application/cloudevents-batch+json"
PROGRESS_EVERY_S = 10.0


class Phase:
    """RSS of the server sampled every ``interval`` seconds, with its peak, for one phase."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.now_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.now_kib = RssSampler.rss_kib(self.pid)
        self.peak_kib = max(self.peak_kib, self.now_kib)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Phase:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


async def _ingest(
    url: str, bodies: Iterator[bytes], clients: int, rss: Phase, total: int
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    statuses: dict[int, int] = {}
    acked = [0]
    progress: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for body in bodies:  # one shared generator: each request takes the next batch
                writer.write(build_request(url, "POST", "/api/v1/events", body, CT_BATCH))
                head = await reader.readuntil(b"\r\n\r\n")
                status, length, _ = _parse_head(head[:-4])
                if length:
                    await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    acked[0] += 1000
        finally:
            writer.close()

    async def report() -> None:
        last_t, last_n = t0, 0
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            now, n = time.perf_counter(), acked[0]
            rate, overall = (n - last_n) / (now - last_t), n / (now - t0)
            sample = {
                "t_s": round(now - t0, 1),
                "events": n,
                "rate": round(rate),
                "rss_mib": mib(rss.now_kib),
                "rss_peak_mib": mib(rss.peak_kib),
            }
            progress.append(sample)
            print(
                f"[{now - t0:7.1f}s] {n:>11,} / {total:,} events  {rate:>8,.0f} ev/s "
                f"(overall {overall:,.0f})  RSS {mib(rss.now_kib):,.0f} MiB "
                f"(peak {mib(rss.peak_kib):,.0f})  load {loadavg().split(' ', 1)[0]}",
                flush=True,
            )
            last_t, last_n = now, n

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        reporter.cancel()
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 2),
        "events_acknowledged": acked[0],
        "rate": round(acked[0] / seconds) if seconds > 0 else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "progress": progress,
    }


def unfolded(url: str) -> int:
    """Events stored and not folded yet (SQLite: above the watermark; PostgreSQL: queued)."""
    if is_pg(url):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM usage_fold_queue").fetchone()
            return int(row[0]) if row else 0
    conn = sqlite3.connect(sqlite_path(url), timeout=30.0)
    try:
        row = conn.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events) - "
            "(SELECT coalesce(max(seq), 0) FROM usage_fold_state)"
        ).fetchone()
        return max(0, int(row[0]))
    finally:
        conn.close()


def _bodies(events: int) -> Iterator[bytes]:
    for batch in D.generate(events, seed=31, source="bench-rss"):
        yield D.batch_body(batch, "bench-rss")


def run(args: argparse.Namespace) -> dict[str, Any]:
    opts = Options(
        mode="quick",
        backends=[args.backend],
        out=args.out,
        data_dir=args.data_dir.resolve(),
        pg_url=args.pg_url,
    )
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    config = P.write_config(opts.data_dir)
    out: dict[str, Any] = {
        "command": " ".join(["python -m bench.ingest_rss", *sys.argv[1:]]),
        "meta": meta(opts),
        "events": args.events,
        "clients": args.clients,
        "backend": args.backend,
    }
    with Backend(args.backend, opts) as be:
        url = be.db("bench_ingest_rss", fresh=True)
        with Server(url, config, P.clock_text()) as srv:
            pid = srv.pid
            cpu = lambda: cpu_seconds(pid, db_name(url))  # noqa: E731
            print(f"server pid {pid} on {url}; {args.events:,} events, {args.clients} clients")
            start_kib = RssSampler.rss_kib(pid)
            cpu0 = cpu()
            with Phase(pid) as ingest_rss:
                ingest = asyncio.run(
                    _ingest(srv.url, _bodies(args.events), args.clients, ingest_rss, args.events)
                )
            cpu1 = cpu()
            ingest.update(
                {
                    "rss_start_mib": mib(start_kib),
                    "rss_peak_mib": mib(ingest_rss.peak_kib),
                    "rss_end_mib": mib(ingest_rss.now_kib),
                    "cpu_us_per_event": round((cpu1 - cpu0) / max(1, args.events) * 1e6, 2),
                }
            )
            print(
                f"ingest: {ingest['events_acknowledged']:,} events in {ingest['seconds']:,.0f} s "
                f"({ingest['rate']:,} ev/s), peak RSS {ingest['rss_peak_mib']:,.0f} MiB; "
                "waiting for the fold",
                flush=True,
            )
            done = fold_done(url)
            t = time.perf_counter()
            last = t
            caught_up = True
            with Phase(pid) as fold_rss:
                while not done():
                    if time.perf_counter() - t > args.fold_timeout:
                        caught_up = False
                        break
                    time.sleep(1.0)
                    if time.perf_counter() - last >= PROGRESS_EVERY_S:
                        last = time.perf_counter()
                        print(
                            f"  fold: {last - t:6.0f} s  RSS {mib(fold_rss.now_kib):,.0f} MiB "
                            f"(peak {mib(fold_rss.peak_kib):,.0f})",
                            flush=True,
                        )
            fold_s = time.perf_counter() - t
            fold = {
                "caught_up": caught_up,
                "catch_up_s": round(fold_s, 1) if caught_up else None,
                "waited_s": round(fold_s, 1),
                "events_left": unfolded(url),
                "rss_peak_mib": mib(fold_rss.peak_kib),
                "rss_end_mib": mib(fold_rss.now_kib),
                "cpu_us_per_event": round((cpu() - cpu1) / max(1, args.events) * 1e6, 2),
            }
            assert srv.rss is not None
            overall_kib = max(srv.rss.max_kib, ingest_rss.peak_kib, fold_rss.peak_kib)
        stored = count_rows(Store(url), "events")
        if args.backend == "sqlite":
            db_file = Path(url.removeprefix("sqlite:///"))
            out["database_mib"] = mib(db_file.stat().st_size // 1024)
    out.update(
        {
            "ingest": ingest,
            "fold": fold,
            "rate_including_fold": round(
                ingest["events_acknowledged"] / (ingest["seconds"] + fold_s)
            )
            if fold["caught_up"]
            else None,
            "rss_peak_mib": mib(overall_kib),
            "rss_under_1gib": overall_kib < 1024 * 1024,
            "events_stored": stored,
            "ok": stored == args.events and ingest["events_acknowledged"] == args.events,
            "loadavg_at_end": loadavg(),
        }
    )
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_rss")
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument(
        "--fold-timeout",
        type=float,
        default=3600.0,
        help="most seconds to wait for the fold after the ingest (then report what is left)",
    )
    p.add_argument("--pg-url")
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "allotment-bench")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / f"ingest-rss-{args.backend}-{args.events}.json"
    out = run(args)
    text = json.dumps(out, indent=1)
    args.out.write_text(text + "\n")
    summary = {k: v for k, v in out.items() if k not in ("meta", "ingest")}
    summary["ingest"] = {k: v for k, v in out["ingest"].items() if k != "progress"}
    print(json.dumps(summary, indent=1))
    print(f"JSON written to {args.out}")
    return 0 if out["ok"] and out["rss_under_1gib"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
