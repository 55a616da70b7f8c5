"""Command line of the benchmark harness."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.report import markdown_table, text_table
from bench.run import Options, Run, log


def _sizes(text: str | None) -> list[int] | None:
    return [int(s.replace("_", "")) for s in text.split(",")] if text else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Allotment benchmark: ingest throughput, entitlement value latency and meter "
        "query latency, each with its naive and floor references (issue 5).",
    )
    p.add_argument(
        "--mode",
        choices=["quick", "full"],
        default="quick",
        help="quick: 10k-event data sets, under 2 minutes (CI); full: 10k and 10M",
    )
    p.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="comma-separated: sqlite, postgres (default: both)",
    )
    p.add_argument("--out", type=Path, help="JSON result file (default: bench/results/<mode>.json)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "allotment-bench",
        help="where generated databases are cached between runs (default: %(default)s)",
    )
    p.add_argument(
        "--pg-url",
        help="use this PostgreSQL server (needs CREATEDB) instead of "
        "starting a durable throwaway cluster under --data-dir",
    )
    p.add_argument("--sizes", help="override the data-set sizes, e.g. 10000,1000000")
    p.add_argument(
        "--loader",
        choices=["auto", "service", "bulk"],
        default="auto",
        help="how data sets are loaded: the project's ingest service (exact by "
        "construction), or bulk (events by executemany/COPY with indexes "
        "rebuilt after, rollups by ingest's own aggregate_events); auto: "
        "service up to 200k events, bulk above",
    )
    p.add_argument(
        "--budget", type=float, help="most seconds per latency/throughput cell (quick: 2, full: 60)"
    )
    p.add_argument("--rebuild", action="store_true", help="ignore cached data sets")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="build and cache the data sets, measure nothing (then measure on an idle machine)",
    )
    p.add_argument(
        "--only",
        choices=["ingest", "notify", "catalog"],
        help="one group of figures: ingest (no data sets), notify (notify.ingest: ingest with "
        "1000 notification rules vs none), catalog (the one /v1 call at --catalog-sizes)",
    )
    p.add_argument(
        "--catalog-sizes",
        help="events in the one-call data sets, e.g. 10000,1000000 (default: the mode's)",
    )
    p.add_argument(
        "--ingest-events",
        type=int,
        help="events in the batch ingest cell (a twentieth of it, at least 1000, as single "
        "events); default: the mode's (quick 10 000, full 1 000 000)",
    )
    p.add_argument(
        "--ingest-replicas",
        help="PostgreSQL: also measure batch ingest through `allotment serve --workers N` for "
        "each N of this list (e.g. 1,2,3; full mode does 1,2,3 with 300 000 events); the events "
        "per run are --ingest-events' (default 100 000)",
    )
    args = p.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = set(backends) - {"sqlite", "postgres"}
    if bad:
        p.error(f"unknown backend(s): {', '.join(sorted(bad))}")
    out = args.out or Path(__file__).resolve().parent / "results" / f"{args.mode}.json"
    sizes = _sizes(args.sizes)
    catalog_sizes = _sizes(args.catalog_sizes)
    opts = Options(
        mode=args.mode,
        backends=backends,
        out=out,
        data_dir=args.data_dir.resolve(),
        pg_url=args.pg_url,
        sizes=sizes,
        rebuild=args.rebuild,
        only=args.only,
        ingest_events=args.ingest_events,
        catalog_sizes=catalog_sizes,
    )
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    if args.budget:
        opts.plan.budget_s = args.budget
    if args.ingest_replicas:
        opts.plan.ingest_replicas = tuple(int(n) for n in args.ingest_replicas.split(","))
        opts.plan.ingest_replica_events = args.ingest_events or 100_000
    if args.prepare_only:
        Run(opts).prepare()
        log("data sets ready")
        return 0
    result = Run(opts).run()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(text_table(result))
    if args.markdown:
        print()
        print(markdown_table(result))
    log(f"\nJSON written to {out} ({result['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
