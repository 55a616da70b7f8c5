"""Full-density rollup reads: one subject with usage every minute in 3 groups for 30 days.

    .venv/bin/python -m bench.rollup_density [--db sqlite|postgresql://...] [--days 30]

Loads the rollups through the real ingest path (``usage_write.aggregate_events``, one
transaction per day), then times, in-process (the service call, median of warm runs):

* the meter query of that subject over 30 days, DAY windows in UTC, in Europe/Budapest and in
  Asia/Kolkata, and grouped by model;
* ``usage_totals`` for one 30-day range starting mid-hour, and for 5 phase ranges;
* ``usage_series`` over the 30 days (minute rows; what UNIQUE_COUNT/LATEST still use).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.timeutil import to_micros
from allotment.domain.windows import WindowSize, parse_time_zone
from allotment.services.meter_queries import MeterQuery
from allotment.storage import meters_repo, usage_write
from allotment.storage.database import open_database

START = datetime(2025, 1, 1, tzinfo=UTC)
MODELS = ("gpt-4o", "gpt-4o-mini", "o3")


def _time(fn: Callable[[], Any], runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    url = args.db
    if url == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='allotment-density-')}/d.sqlite"
    end = START + timedelta(days=args.days)
    c = Container(Settings(db_url=url), open_database(url), FrozenClock(end + timedelta(days=1)))
    c.start()
    c.meters.create(
        {
            "slug": "density",
            "aggregation": "SUM",
            "eventType": "density",
            "valueProperty": "$.tokens",
            "groupBy": {"model": "$.model"},
        }
    )
    with c.db.read() as tx:
        meters = meters_repo.live_by_event_types(tx, {"density"})
    by_type = usage_write.targets((m.id, m) for m in meters)
    t0 = time.perf_counter()
    for day in range(args.days):
        base = to_micros(START) + day * usage_write.DAY_US
        events = (
            ("density", "heavy", base + minute * 60_000_000 + 7, {"tokens": v, "model": model})
            for minute in range(1440)
            for i, model in enumerate(MODELS)
            for v in [Decimal(minute % 97 + i) if minute % 5 else Decimal("0.5")]
        )
        with c.db.write() as tx:
            usage_write.aggregate_events(tx, by_type, events)
    load_s = time.perf_counter() - t0
    with c.db.read() as tx:
        counts = {
            t: tx.execute(f"SELECT count(*) FROM {t}")[0][0]
            for t in ("usage_minute", "usage_hour", "usage_day")
        }
    print(f"db={c.db.dialect} days={args.days} load={load_s:.1f}s rows={counts}")

    def query(zone: str, group: bool = False) -> Callable[[], Any]:
        q = MeterQuery(
            from_=START,
            to=end,
            window_size=WindowSize.DAY,
            time_zone=parse_time_zone(zone),
            subjects=("heavy",),
            group_by=("model",) if group else (),
        )
        return lambda: c.meter_queries.query("density", q)

    mid = START + timedelta(minutes=17)
    phases = [(mid + timedelta(days=6 * k), mid + timedelta(days=6 * k + 6)) for k in range(5)]
    cells = [
        ("query DAY windows, UTC", query("UTC")),
        ("query DAY windows, UTC, by model", query("UTC", True)),
        ("query DAY windows, Europe/Budapest", query("Europe/Budapest")),
        ("query DAY windows, Asia/Kolkata", query("Asia/Kolkata")),
        (
            "usage_totals, one 30-day range from :17",
            lambda: c.meter_queries.usage_totals("density", "heavy", None, [(mid, end)]),
        ),
        (
            "usage_totals, 5 phase ranges",
            lambda: c.meter_queries.usage_totals("density", "heavy", None, phases),
        ),
        (
            "usage_totals, 5 ranges, filter model=o3",
            lambda: c.meter_queries.usage_totals("density", "heavy", {"model": "o3"}, phases),
        ),
        (
            "usage_series, 30 days",
            lambda: c.meter_queries.usage_series("density", "heavy", None, START, end),
        ),
    ]
    for name, fn in cells:
        runs = 3 if "series" in name else args.runs
        print(f"{name:45s} {_time(fn, runs):9.2f} ms")
    c.close()


if __name__ == "__main__":
    main()
