"""``allotment events import`` against ``POST /api/v1/events``: the same events, each into a
fresh database, in one run (issue 18: the import must reach at least the HTTP batch rate).

    .venv/bin/python -m bench.import_rate [--events 50000] [--rounds 2]
        [--backends sqlite,postgres] [--pg-url URL] [--data-dir DIR]

HTTP: the bench's 1000-event ``application/cloudevents-batch+json`` bodies from 16 keep-alive
clients against ``allotment serve`` (what ``ingest.batch`` measures). Import: the same events as
one NDJSON file, ``allotment events import FILE`` in its own process (default batch size), its
rate as the import itself reports it (file read, decode, validation, commit; the process's start
and migration excluded, as the server's start is excluded from the HTTP figure). Both durable
(SQLite ``synchronous=FULL``; PostgreSQL ``fsync=on``), with the bench's config (one SUM meter
on these events, so the rollups are maintained). The two alternate, ``--rounds`` times each;
the report gives every rate, the medians and their ratio — and, because wall-clock rates on a
shared machine swing by 2× from one run to the next, the CPU time per event of each side (the
server process's user + system time over the blast, from ``/proc``; the import's own process
time as it reports it in ``cpuSeconds``), which a busy machine disturbs far less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import data as D
from bench.httpc import blast, build_request
from bench.run import Backend, Options, Run, blast_stats, log
from bench.stores import Store, count_rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.import_rate")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--pg-url")
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "allotment-bench")
    args = p.parse_args()
    opts = Options(
        mode="quick",
        backends=args.backends.split(","),
        out=Path(tempfile.gettempdir()) / "import-rate.json",
        data_dir=args.data_dir.resolve(),
        pg_url=args.pg_url,
    )
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    run = Run(opts)
    batches = list(D.generate(args.events, seed=21, source="bench-import"))
    bodies = [D.batch_body(b, "bench-import") for b in batches]
    ndjson = opts.data_dir / f"import-{args.events}.ndjson"
    with ndjson.open("wb") as f:
        for b in batches:
            f.write(("\n".join(D.to_json(b, "bench-import")) + "\n").encode())
    out: dict[str, Any] = {"events": args.events, "command": " ".join(sys.argv), "backends": {}}
    for name in opts.backends:
        rates: dict[str, list[float]] = {"http": [], "import": []}
        cpu_us: dict[str, list[float]] = {"http": [], "import": []}
        with Backend(name, opts) as be:
            for r in range(args.rounds):
                url = be.db(f"bench_import_http_{r}", fresh=True)
                with run.server(be, url, f"http-{r}") as srv:
                    ct = "application/cloudevents-batch+json"
                    reqs = [build_request(srv.url, "POST", "/api/v1/events", b, ct) for b in bodies]
                    cpu0 = cpu_seconds(srv.pid)
                    res = blast_stats(blast(srv.url, reqs, 16), 1000)
                    cpu_us["http"].append((cpu_seconds(srv.pid) - cpu0) / args.events * 1e6)
                assert count_rows(Store(url), "events") == args.events, "HTTP lost events"
                rates["http"].append(res["rate"])
                url = be.db(f"bench_import_file_{r}", fresh=True)
                cmd = [sys.executable, "-m", "allotment", "events", "import", str(ndjson)]
                cmd += ["--db", url, "--config", str(run.config), "--json", "--no-progress"]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                summary = json.loads(proc.stdout.strip().splitlines()[-1])
                assert summary["accepted"] == args.events, summary
                rates["import"].append(args.events / summary["seconds"])
                cpu_us["import"].append(summary["cpuSeconds"] / args.events * 1e6)
                log(
                    f"[{name}] round {r}: HTTP {rates['http'][-1]:,.0f} ev/s "
                    f"({cpu_us['http'][-1]:.0f} µs server CPU/event), import "
                    f"{rates['import'][-1]:,.0f} ev/s ({cpu_us['import'][-1]:.0f} µs CPU/event)"
                )
        med = {k: statistics.median(v) for k, v in rates.items()}
        cpu = {k: statistics.median(v) for k, v in cpu_us.items()}
        out["backends"][name] = {
            "rates": rates,
            "cpu_us_per_event": cpu_us,
            "median": med,
            "median_cpu_us_per_event": cpu,
            "import_vs_http": med["import"] / med["http"],
            "http_cpu_vs_import_cpu": cpu["http"] / cpu["import"],
        }
        print(
            f"{name}: HTTP batches {med['http']:,.0f} ev/s, import {med['import']:,.0f} ev/s "
            f"(median of {args.rounds}), import ÷ HTTP = {med['import'] / med['http']:.2f}×; "
            f"CPU per event: server {cpu['http']:.0f} µs, import {cpu['import']:.0f} µs "
            f"(server ÷ import = {cpu['http'] / cpu['import']:.2f}×)"
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
