"""Hour and day rollups and the integer sum shadow (migration 0400) on a real database (SQLite
and PostgreSQL): every grain equals the plain computation over the raw events, exactly —
integer and decimal values mixed, huge values, negatives, late events, SQLite's integer
overflow — and ``usage_totals`` equals ``UsageSeries.total``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.errors import InvariantViolation
from allotment.domain.events import CloudEvent, validate_event
from allotment.domain.timeutil import to_micros
from allotment.storage import usage_read
from allotment.storage.database import open_database
from allotment.storage.usage_write import DAY_US, HOUR_US, ISUM_MAX, MINUTE_US, int_sum

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
T0 = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
GRAIN_TABLES = (("usage_minute", "minute"), ("usage_hour", "bucket"), ("usage_day", "bucket"))


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    container = Container(Settings(db_url=db_url), open_database(db_url), FrozenClock(NOW))
    container.start()
    yield container
    container.close()


_ids = iter(range(10**9))


def ev(at: datetime, value: Any, model: str = "a", subject: str = "s") -> CloudEvent:
    raw = {
        "specversion": "1.0",
        "id": str(next(_ids)),
        "source": "t",
        "type": "tok",
        "subject": subject,
        "time": at.isoformat(),
        "data": {"v": value, "model": model},
    }
    return validate_event(raw, "event", NOW)


def meter(c: Container, slug: str, aggregation: str = "SUM") -> str:
    body: dict[str, Any] = {
        "slug": slug,
        "aggregation": aggregation,
        "eventType": "tok",
        "groupBy": {"model": "$.model"},
    }
    if aggregation != "COUNT":
        body["valueProperty"] = "$.v"
    return c.meters.create(body).id


def grain_rows(c: Container, meter_id: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with c.db.read() as tx:
        for table, column in GRAIN_TABLES:
            rows = tx.execute(
                f"SELECT subject, {column}, group_key, count, sum, min, max, latest_time, "
                f"latest_value, isum FROM {table} WHERE meter_id = ? "
                f"ORDER BY subject, {column}, group_key",
                (meter_id,),
            )
            out[table] = [tuple(r) for r in rows]
    return out


def dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(str(v))


def fold_expected(rows: list[tuple[Any, ...]], step: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Minute rows folded per ``step`` in plain Python (count, sum, min, max, latest)."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for subject, minute, gkey, count, s, lo, hi, lt, lv, _ in rows:
        key = (subject, minute - minute % step, gkey)
        cell = out.setdefault(key, [0, None, None, None, None, None])
        cell[0] += count
        if s is not None:
            cell[1] = dec(s) if cell[1] is None else cell[1] + dec(s)
            cell[2] = dec(lo) if cell[2] is None else min(cell[2], dec(lo))
            cell[3] = dec(hi) if cell[3] is None else max(cell[3], dec(hi))
        if lt is not None and (cell[4] is None or lt > cell[4]):
            cell[4], cell[5] = lt, dec(lv)
    return {k: tuple(v) for k, v in out.items()}


def check_grains(c: Container, meter_id: str) -> None:
    """Every hour and day row is the fold of its minute rows, and isum shadows sum."""
    got = grain_rows(c, meter_id)
    for table, step in (("usage_hour", HOUR_US), ("usage_day", DAY_US)):
        want = fold_expected(got["usage_minute"], step)
        have = {
            (r[0], int(r[1]), r[2]): (int(r[3]), dec(r[4]), dec(r[5]), dec(r[6]), r[7], dec(r[8]))
            for r in got[table]
        }
        assert have == want, table
    for table, rows in got.items():
        for r in rows:
            s, isum = dec(r[4]), r[9]
            assert isum is None or Decimal(int(isum)) == s, (table, r)
            if s is not None and isum is None:
                assert int_sum(s) is None, (table, r)


def naive_total(events: list[CloudEvent], lo: datetime, hi: datetime, count: bool) -> Decimal:
    total = Decimal(0)
    for e in events:
        if lo <= e.time < hi:
            total += 1 if count else Decimal(str(e.data["v"]))  # type: ignore[index]
    return total


# ---------------------------------------------------------------- maintenance


def test_int_sum_bounds() -> None:
    assert int_sum(Decimal("12")) == 12
    assert int_sum(Decimal("-12.000")) == -12
    assert int_sum(Decimal("1E+3")) == 1000
    assert int_sum(Decimal("0.5")) is None
    assert int_sum(Decimal(ISUM_MAX)) == ISUM_MAX
    assert int_sum(Decimal(-ISUM_MAX)) == -ISUM_MAX
    assert int_sum(Decimal(ISUM_MAX + 1)) is None
    assert int_sum(None) is None


def test_grains_follow_minutes_through_batches_late_events_and_rebuilds(c: Container) -> None:
    mid = meter(c, "grains_sum")
    cid = meter(c, "grains_count", "COUNT")
    values = ["1", "2.5", "-3", "0.25", "-0.25", str(ISUM_MAX), str(ISUM_MAX), "1e2", "7"]
    events = [
        ev(T0 + timedelta(minutes=37 * i), Decimal(v), "ab"[i % 2])
        for i, v in enumerate(values * 3)
    ]
    c.events.ingest(events[:10])
    c.events.ingest(events[10:])
    c.events.ingest([ev(T0 + timedelta(minutes=1), Decimal("0.5"), "a")])  # late, same minute
    for m in (mid, cid):
        check_grains(c, m)
    before = grain_rows(c, mid)
    c.meters.update("grains_sum", {"groupBy": {}})  # a groupBy change rebuilds every grain
    check_grains(c, mid)
    assert sum(int(r[3]) for r in grain_rows(c, mid)["usage_day"]) == len(events) + 1
    assert before["usage_day"] != grain_rows(c, mid)["usage_day"]
    c.meters.delete("grains_sum")
    assert all(not rows for rows in grain_rows(c, mid).values())


# ---------------------------------------------------------------- usage_totals


RANGES = [
    (T0, T0 + timedelta(days=3)),
    (T0 + timedelta(minutes=7), T0 + timedelta(days=2, hours=5, minutes=13)),
    (T0 + timedelta(hours=23, minutes=59), T0 + timedelta(days=1, minutes=1)),
    (T0 + timedelta(hours=2), T0 + timedelta(hours=2)),
    (T0 - timedelta(days=40), NOW),
    (T0 + timedelta(minutes=90), T0 + timedelta(minutes=91)),
]


@pytest.mark.parametrize("aggregation", ["SUM", "COUNT"])
def test_usage_totals_equal_series_and_raw_events(c: Container, aggregation: str) -> None:
    slug = f"totals_{aggregation.lower()}"
    meter(c, slug, aggregation)
    values = [Decimal(v) for v in ("1", "0.1", "-2", "12345678901234567890.5", "3")]
    events = [
        ev(T0 + timedelta(minutes=11 * i), values[i % len(values)], "abc"[i % 3])
        for i in range(600)
    ]
    c.events.ingest(events[:300])
    c.events.ingest(events[300:])
    count = aggregation == "COUNT"
    got = c.meter_queries.usage_totals(slug, "s", None, RANGES)
    assert got == [naive_total(events, a, b, count) for a, b in RANGES]
    series = c.meter_queries.usage_series(slug, "s", None, T0 - timedelta(days=40), NOW)
    assert got == [series.total(a, b) for a, b in RANGES]
    only_b = c.meter_queries.usage_totals(slug, "s", {"model": "b"}, RANGES)
    b_events = [e for e in events if e.data["model"] == "b"]  # type: ignore[index]
    assert only_b == [naive_total(b_events, a, b, count) for a, b in RANGES]
    assert c.meter_queries.usage_totals(slug, "nobody", None, RANGES) == [Decimal(0)] * 6
    assert c.meter_queries.usage_totals(slug, "s", None, []) == []


def test_usage_totals_refuses_unaligned_ranges_and_unique_meters(c: Container) -> None:
    meter(c, "totals_checks")
    with pytest.raises(InvariantViolation):
        c.meter_queries.usage_totals("totals_checks", "s", None, [(T0, T0 + timedelta(seconds=30))])
    meter(c, "totals_unique", "UNIQUE_COUNT")
    with pytest.raises(InvariantViolation):
        c.meter_queries.usage_totals("totals_unique", "s", None, [(T0, NOW)])


def test_decompose_covers_the_range_with_the_fewest_rows() -> None:
    lo = to_micros(T0) + 7 * MINUTE_US
    hi = to_micros(T0) + 3 * DAY_US + 5 * HOUR_US + 13 * MINUTE_US
    segs = usage_read.decompose(lo, hi)
    covered = sorted((a, b) for _, a, b in segs)
    assert covered[0][0] == lo
    assert covered[-1][1] == hi
    assert all(x[1] == y[0] for x, y in itertools.pairwise(covered))
    by = {g.table: [(a, b) for gg, a, b in segs if gg is g] for g, _, _ in segs}
    assert by["usage_day"] == [(to_micros(T0) + DAY_US, to_micros(T0) + 3 * DAY_US)]
    for g, a, b in segs:
        assert a % g.step == 0
        assert b % g.step == 0
    assert usage_read.decompose(lo, lo) == []


def test_integer_overflow_falls_back_to_exact_decimals(c: Container, backend: str) -> None:
    """1100 rows of 2^53 in one group overflow SQLite's 64-bit sum(): the read is re-run on
    the exact decimals and stays exact (PostgreSQL's sum(bigint) never overflows)."""
    slug = "overflow"
    meter(c, slug)
    big = Decimal(ISUM_MAX)
    events = [ev(T0 + timedelta(hours=i), big, "a") for i in range(1100)]
    events.append(ev(T0 + timedelta(minutes=5), Decimal("0.5"), "a"))
    c.events.ingest(events[:600])
    c.events.ingest(events[600:])
    start = T0 + timedelta(minutes=1)  # ragged start: hours, then days, then hours
    end = T0 + timedelta(hours=1100)
    want = big * 1099 + Decimal("0.5")
    assert c.meter_queries.usage_totals(slug, "s", None, [(start, end)]) == [want]
    with c.db.read() as tx:
        rows = tx.execute(
            "SELECT isum FROM usage_hour WHERE meter_id = (SELECT id FROM meters WHERE slug = ?)",
            (slug,),
        )
    assert sum(1 for r in rows if r[0] is not None) >= 1099
    all_hours = [(T0 + timedelta(hours=i), T0 + timedelta(hours=i + 1)) for i in range(3)]
    assert c.meter_queries.usage_totals(slug, "s", None, all_hours) == [
        big + Decimal("0.5"),
        big,
        big,
    ]
