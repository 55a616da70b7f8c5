"""Paired rounds of the ``ingest.single`` shape, commits of ours and the naive app side by side:

    .venv/bin/python -m bench.ab_singles [--backend postgres|sqlite] [--rounds 8]
        [--events 5000] [--clients 16] REV [REV ...]

Each revision is checked out (``bench.ab_commits.checkout``) and served by its own ``allotment
serve`` (``PYTHONPATH`` = that checkout's ``src``) on its own fresh database; beside them the
naive reference app (``bench/refapp.py``). PostgreSQL is ONE durable cluster
(``bench.procs.DurablePostgres``: ``fsync`` and ``synchronous_commit`` on, as ``python -m bench``
runs it; ``bench.ab_commits`` uses the test suite's cluster, whose ``fsync`` is off). Each round
sends ``--events`` new single events from ``--clients`` connections at once to every server in
turn (A B … naive, then the reverse order), waits for our servers' fold to catch up, and records
events/s, the p50 latency and the CPU per event of the server process plus its PostgreSQL
backends. Reported: medians per server and the median of the per-round ratios to the first
revision (> 1: faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import data as D
from bench import project as P
from bench.ab_commits import checkout
from bench.httpc import blast, build_request
from bench.procs import DurablePostgres, RefApp, Server
from bench.refapp import NaiveIngest
from bench.run import cpu_seconds, db_name, fold_done

Target = tuple[str, str, str, str, int]  # name, base url, path, db url, server pid


def _round(t: Target, r: int, events: int, clients: int) -> dict[str, float]:
    name, base, path, url, pid = t
    source = f"ab-singles-{r}"
    rows = [e for b in D.generate(events, seed=100 + r, batch=1000, source=source) for e in b]
    ct = "application/cloudevents+json"
    sent = [build_request(base, "POST", path, j.encode(), ct) for j in D.to_json(rows, source)]
    cpu = cpu_seconds(pid, db_name(url))
    res = blast(base, sent, clients)
    used = cpu_seconds(pid, db_name(url)) - cpu
    if res.statuses != {204: events}:
        raise RuntimeError(f"{name}: answers {res.statuses}")
    if name != "naive":
        done = fold_done(url)
        while not done():
            time.sleep(0.05)
    time.sleep(0.4)
    return {
        "events/s": events / res.seconds,
        "p50 ms": statistics.median(res.latencies_us) / 1000,
        "cpu µs/event": used / events * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="+")
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ab-singles-")))
        pg = None
        if args.backend == "postgres":
            pg = DurablePostgres(tmp / "pg", shared_buffers="256MB").start()
            stack.callback(pg.stop)

        def database(name: str) -> str:
            return pg.database(name)[0] if pg is not None else f"sqlite:///{tmp}/{name}.db"

        config = P.write_config(tmp)
        targets: list[Target] = []
        for i, rev in enumerate(args.revs):
            tree = stack.enter_context(checkout(rev, tmp / f"tree-{i}"))
            url = database(f"ours_{i}")
            srv = Server(url, config, P.clock_text())
            srv.proc.env["PYTHONPATH"] = str(tree / "src")
            stack.enter_context(srv)
            targets.append((f"{i}:{rev}", srv.url, "/api/v1/events", url, srv.pid))
        nurl = database("naive")
        NaiveIngest.create_table(nurl)
        ref = stack.enter_context(RefApp(ingest_url=nurl))
        assert ref.proc is not None
        targets.append(("naive", ref.url, "/naive/events", nurl, ref.proc.pid))
        results: dict[str, list[dict[str, float]]] = {t[0]: [] for t in targets}
        for r in range(args.rounds):
            for t in targets if r % 2 == 0 else targets[::-1]:
                results[t[0]].append(_round(t, r, args.events, args.clients))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        first = targets[0][0]
        print(
            f"{args.backend}: {args.rounds} rounds of {args.events} single events from "
            f"{args.clients} clients; paired = median of the per-round ratios to {first}"
        )
        for name, rows in results.items():
            med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
            paired = statistics.median(
                a["events/s"] / b["events/s"] for a, b in zip(rows, results[first], strict=True)
            )
            print(
                f"  {name:24} {med['events/s']:8.0f} events/s  p50 {med['p50 ms']:6.2f} ms  "
                f"cpu {med['cpu µs/event']:6.1f} µs/event  paired {paired:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
