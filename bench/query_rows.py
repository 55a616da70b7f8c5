"""Time one all-subjects meter query in process, split into the service call and the JSON
rendering, on a benchmark database (docs/api/meter-queries.md, "Many rows").

    .venv/bin/python -m bench.query_rows /tmp/allotment-bench/sqlite/allot_10000_100_<fp>.db

Prints the median of ``--runs`` warm runs of ``MeterQueryService.query`` (all subjects ×
model, DAY windows over the data window) and of ``result_json`` + encoding, with the
garbage collector tuned as ``allotment serve`` tunes it (``--gc default`` leaves it alone).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench import data as D
from bench import project as P


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.query_rows")
    ap.add_argument("db", help="a benchmark SQLite file, or a postgresql:// URL")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gc", choices=["serve", "default"], default="serve")
    args = ap.parse_args()
    from allotment.domain.windows import WindowSize
    from allotment.http.responses import json_response
    from allotment.http.routes.meter_queries import result_json
    from allotment.services.meter_queries import MeterQuery

    url = args.db if "://" in args.db else f"sqlite:///{args.db}"
    config = P.write_config(Path(args.db).parent if "://" not in args.db else Path("."))
    c = P.build_container(url, config)
    if args.gc == "serve":
        from allotment.gc_tuning import tune_gc

        tune_gc()
    q = MeterQuery(
        from_=D.T0, to=D.T_END, window_size=WindowSize.DAY, group_by=("subject", "model")
    )
    query_ms, render_ms, rows, body_bytes = [], [], 0, 0
    for _ in range(args.runs + 1):
        t0 = time.perf_counter()
        result = c.meter_queries.query(D.METER_SLUG, q)
        t1 = time.perf_counter()
        body_bytes = len(json_response(result_json(result)).body)
        t2 = time.perf_counter()
        query_ms.append((t1 - t0) * 1e3)
        render_ms.append((t2 - t1) * 1e3)
        rows = len(result.rows)
    c.close()
    q_med = statistics.median(query_ms[1:])
    r_med = statistics.median(render_ms[1:])
    print(
        f"{rows} rows: query {q_med:.1f} ms, render {r_med:.1f} ms, "
        f"{(q_med + r_med) * 1e3 / max(rows, 1):.1f} µs per row, body {body_bytes / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
