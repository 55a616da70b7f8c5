"""``allotment events import`` against ``POST /api/v1/events``: the same events, each into a
fresh database, in one run (issue 18: the import must reach at least the HTTP batch rate).

    .venv/bin/python -m bench.import_rate [--events 50000] [--rounds 2]
        [--backends sqlite,postgres] [--pg-url URL] [--data-dir DIR] [--jobs 1,2]

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
time as it reports it in ``cpuSeconds``: with ``--jobs`` 2 or more its workers' and its own),
which a busy machine disturbs far less. ``--jobs 1,2`` measures the import once per value in
every round (``allotment events import --jobs N``), so one process and N workers are compared
in the same run as HTTP.
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
    p.add_argument("--jobs", default="1,2", help="the import's --jobs values, each measured")
    args = p.parse_args()
    jobs = [int(j) for j in args.jobs.split(",")]
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
    out: dict[str, Any] = {
        "events": args.events,
        "command": " ".join(sys.argv),
        "jobs": jobs,
        "load_at_start": os.getloadavg(),
        "backends": {},
    }
    for name in opts.backends:
        sides = ["http", *(f"import-j{j}" for j in jobs)]
        rates: dict[str, list[float]] = {k: [] for k in sides}
        cpu_us: dict[str, list[float]] = {k: [] for k in sides}
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
                line = f"[{name}] round {r}: HTTP {rates['http'][-1]:,.0f} ev/s "
                line += f"({cpu_us['http'][-1]:.1f} µs server CPU/event)"
                order = jobs if r % 2 == 0 else jobs[::-1]  # alternate which import goes first
                for j in order:
                    side = f"import-j{j}"
                    url = be.db(f"bench_import_file_{r}_j{j}", fresh=True)
                    cmd = [sys.executable, "-m", "allotment", "events", "import", str(ndjson)]
                    cmd += ["--db", url, "--config", str(run.config), "--json", "--no-progress"]
                    cmd += ["--jobs", str(j)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    summary = json.loads(proc.stdout.strip().splitlines()[-1])
                    assert summary["accepted"] == args.events, summary
                    rates[side].append(args.events / summary["seconds"])
                    cpu_us[side].append(summary["cpuSeconds"] / args.events * 1e6)
                    line += f", {side} {rates[side][-1]:,.0f} ev/s ({cpu_us[side][-1]:.1f} µs)"
                log(line + f" (load {os.getloadavg()[0]:.1f})")
        med = {k: statistics.median(v) for k, v in rates.items()}
        cpu = {k: statistics.median(v) for k, v in cpu_us.items()}
        out["backends"][name] = {
            "rates": rates,
            "cpu_us_per_event": cpu_us,
            "median": med,
            "median_cpu_us_per_event": cpu,
            "import_vs_http": {k: med[k] / med["http"] for k in sides[1:]},
            "import_vs_http_paired": {
                k: statistics.median(a / h for a, h in zip(rates[k], rates["http"], strict=True))
                for k in sides[1:]
            },
            "http_cpu_vs_import_cpu": {k: cpu["http"] / cpu[k] for k in sides[1:]},
        }
        text = f"{name}: HTTP batches {med['http']:,.0f} ev/s ({cpu['http']:.1f} µs CPU/event)"
        for k in sides[1:]:
            text += (
                f"; {k} {med[k]:,.0f} ev/s = {med[k] / med['http']:.2f}× HTTP "
                f"({cpu[k]:.1f} µs CPU/event)"
            )
        print(text + f" (medians of {args.rounds})")
    out["load_at_end"] = os.getloadavg()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
