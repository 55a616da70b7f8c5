"""Hour and day rollups and the integer sum shadow (migration 0400) on a real database (SQLite
and PostgreSQL): every grain equals the plain computation over the raw events, exactly —
integer and decimal values mixed, huge values, negatives, late events, SQLite's integer
overflow — and ``usage_totals`` equals ``UsageSeries.total``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.container import Container
from allotment.domain.errors import InvariantViolation
from allotment.domain.events import CloudEvent, validate_event
from allotment.domain.meters import Aggregation, Meter, extract
from allotment.domain.timeutil import to_micros
from allotment.domain.windows import WindowGrid, WindowSize, floor_window, parse_time_zone
from allotment.services.meter_queries import MeterQuery
from allotment.storage import migrate, usage_fold, usage_grains
from allotment.storage.database import open_database
from allotment.storage.usage_write import DAY_US, HOUR_US, ISUM_MAX, MINUTE_US, int_sum
from tests.support import frozen_container

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
T0 = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
GRAIN_TABLES = (("usage_minute", "minute"), ("usage_hour", "bucket"), ("usage_day", "bucket"))


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


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


def meter(c: Container, slug: str, aggregation: str = "SUM", event_type: str = "tok") -> str:
    body: dict[str, Any] = {
        "slug": slug,
        "aggregation": aggregation,
        "eventType": event_type,
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
    segs = usage_grains.decompose(lo, hi)
    covered = sorted((a, b) for _, a, b in segs)
    assert covered[0][0] == lo
    assert covered[-1][1] == hi
    assert all(x[1] == y[0] for x, y in itertools.pairwise(covered))
    by = {g.table: [(a, b) for gg, a, b in segs if gg is g] for g, _, _ in segs}
    assert by["usage_day"] == [(to_micros(T0) + DAY_US, to_micros(T0) + 3 * DAY_US)]
    for g, a, b in segs:
        assert a % g.step == 0
        assert b % g.step == 0
    assert usage_grains.decompose(lo, lo) == []


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


# ---------------------------------------------------------------- property: grains = raw events

ZONES = ("UTC", "Europe/Budapest", "Asia/Kolkata", "America/St_Johns")
H0 = datetime(2025, 3, 29, 0, 0, tzinfo=UTC)  # Budapest springs forward on 2025-03-30
SPAN_S = 4 * 86_400
VALUES = st.one_of(
    st.integers(-1000, 1000).map(Decimal),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False),
    st.sampled_from([Decimal(ISUM_MAX), Decimal(-ISUM_MAX), Decimal(2**60), Decimal("1e15")]),
)
EVENT = st.tuples(
    st.integers(0, SPAN_S * 1000 - 1),  # milliseconds after H0
    VALUES,
    st.sampled_from(["a", "b", None]),
    st.sampled_from(["s1", "s2"]),
)
OFFSET = st.integers(-3_600, SPAN_S + 3_600)  # seconds after H0
MINUTE_OFFSET = st.integers(-60, SPAN_S // 60 + 60).map(lambda m: m * 60)
_example = iter(range(10**9))


def _naive(
    m: Meter, events: Sequence[tuple[datetime, Any, str]], aggregation: Aggregation
) -> Decimal | None:
    """The aggregate of ``(time, data, subject)`` events, from the raw data (ingest order)."""
    acc = usage_fold.Accumulator()
    for at, data, _subject in events:
        ex = extract(m, data)
        assert not isinstance(ex, str)
        v = ex.value
        t = to_micros(at)
        acc.count += 1
        if v is not None:
            acc.sum = v if acc.sum is None else acc.sum + v
            acc.min = v if acc.min is None else min(acc.min, v)
            acc.max = v if acc.max is None else max(acc.max, v)
            if acc.latest_time is None or t >= acc.latest_time:
                acc.latest_time, acc.latest_value = t, v
        if ex.unique is not None:
            acc.uniques.add(ex.unique)
    return acc.value(aggregation)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(EVENT, min_size=1, max_size=30, unique_by=lambda e: e[0]),
    batches=st.integers(1, 3),
    aggregation=st.sampled_from(list(Aggregation)),
    window=st.sampled_from([None, "MINUTE", "HOUR", "DAY", "MONTH"]),
    zone=st.sampled_from(ZONES),
    bounds=st.tuples(OFFSET, OFFSET),
    by_model=st.booleans(),
    by_subject=st.booleans(),
    ranges=st.lists(st.tuples(MINUTE_OFFSET, MINUTE_OFFSET), max_size=4),
    only=st.sampled_from([None, "a", "b", ""]),
    data=st.data(),
)
def test_grain_reads_equal_the_raw_events(
    c: Container,
    raw: list[tuple[int, Decimal, str | None, str]],
    batches: int,
    aggregation: Aggregation,
    window: str | None,
    zone: str,
    bounds: tuple[int, int],
    by_model: bool,
    by_subject: bool,
    ranges: list[tuple[int, int]],
    only: str | None,
    data: st.DataObject,
) -> None:
    n = next(_example)
    slug = f"prop{n}"
    meter(c, slug, aggregation.value, event_type=f"tok{n}")
    m = c.meters.get(slug)
    events = []
    for ms, value, model, subject in raw:
        d: dict[str, Any] = {"v": value}
        if model is not None:
            d["model"] = model
        events.append((H0 + timedelta(milliseconds=ms), d, subject))
    # ingest in random order and batches: later batches hold late events
    order = data.draw(st.permutations(range(len(events))))
    ingested = [events[i] for i in order]
    size = -(-len(ingested) // batches)
    for start in range(0, len(ingested), size):
        c.events.ingest(
            [
                validate_event(
                    {
                        "specversion": "1.0",
                        "id": f"{n}-{start + k}",
                        "source": "prop",
                        "type": f"tok{n}",
                        "subject": subject,
                        "time": at.isoformat(),
                        "data": d,
                    },
                    "event",
                    NOW,
                )
                for k, (at, d, subject) in enumerate(ingested[start : start + size])
            ]
        )

    # the meter query, against windows computed from the raw events
    lo, hi = sorted(bounds)
    if lo == hi:
        hi += 1
    from_, to = H0 + timedelta(seconds=lo), H0 + timedelta(seconds=hi)
    tz = parse_time_zone(zone)
    size_ = None if window is None else WindowSize(window)
    if size_ is WindowSize.MINUTE:
        to = min(to, from_ + timedelta(hours=6))
    q = MeterQuery(
        from_=from_,
        to=to,
        window_size=size_,
        time_zone=tz,
        group_by=(("model",) if by_model else ()) + (("subject",) if by_subject else ()),
    )
    got = {
        (r.window_start, r.subject, tuple(sorted(r.group_by.items()))): r.value
        for r in c.meter_queries.query(slug, q).rows
    }
    cells: dict[tuple[Any, ...], list[tuple[datetime, Any, str]]] = {}
    for at, d, subject in ingested:  # ingest order, so LATEST ties go to the last ingested
        if not from_ <= at < to:
            continue
        start = from_ if size_ is None else floor_window(at, size_, tz)
        groups = (("model", str(d.get("model", ""))),) if by_model else ()
        key = (start, subject if by_subject else None, groups)
        cells.setdefault(key, []).append((at, d, subject))
    want = {k: _naive(m, evs, aggregation) for k, evs in cells.items()}
    assert got == {k: v for k, v in want.items() if v is not None}

    # usage_totals and the usage series over minute-aligned ranges, with a group filter
    if aggregation in (Aggregation.UNIQUE_COUNT, Aggregation.LATEST):
        return
    spans = [(H0 + timedelta(seconds=a), H0 + timedelta(seconds=b)) for a, b in map(sorted, ranges)]
    filters = None if only is None else {"model": only}
    for subject in ("s1", "s2"):
        totals = c.meter_queries.usage_totals(slug, subject, filters, spans)
        expected = []
        for a, b in spans:
            chosen = [
                e
                for e in events
                if e[2] == subject
                and a <= e[0] < b
                and (only is None or str(e[1].get("model", "")) == only)
            ]
            if aggregation is Aggregation.COUNT:
                expected.append(Decimal(len(chosen)))
            else:
                expected.append(sum((Decimal(e[1]["v"]) for e in chosen), Decimal(0)))
        assert totals == expected
        series = c.meter_queries.usage_series(
            slug, subject, filters, H0 - timedelta(hours=1), H0 + timedelta(days=5)
        )
        assert [series.total(a, b) for a, b in spans] == expected


def _grains_for(size: WindowSize, zone: str, days: int = 30) -> set[str]:
    tz = parse_time_zone(zone)
    start = datetime(2025, 3, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(2025, 3, 1 + days, tzinfo=tz).astimezone(UTC)
    grid = WindowGrid.build(start, end, size, tz)
    plan = usage_grains.plan_grains(grid.bounds[0], grid.bounds[-1], grid.bounds)
    return {g.table for g, _, _ in plan}


def test_reads_pick_the_coarsest_grain_the_windows_allow() -> None:
    assert _grains_for(WindowSize.DAY, "UTC") == {"usage_day"}
    assert _grains_for(WindowSize.MONTH, "UTC") == {"usage_day"}
    assert _grains_for(WindowSize.DAY, "Europe/Budapest") == {"usage_hour"}  # DST day inside
    assert _grains_for(WindowSize.DAY, "Asia/Kolkata") == {"usage_hour", "usage_minute"}
    assert _grains_for(WindowSize.HOUR, "Asia/Kolkata", 2) == {"usage_minute"}
    assert _grains_for(WindowSize.HOUR, "UTC", 2) == {"usage_hour"}
    assert _grains_for(WindowSize.MINUTE, "UTC", 1) == {"usage_minute"}


def test_migration_backfills_hour_and_day_rows_from_minutes(db_url: str) -> None:
    """Rows written before migration 0400 get their hour/day rows and isum from it."""
    database = open_database(db_url)
    try:
        migrate.migrate(database, to_micros(NOW))
        base = to_micros(T0)
        rows = [
            ("m", "s", base + 5 * MINUTE_US, "{}", 2, "1.5", "0.5", "1", base + 5 * MINUTE_US, "1"),
            ("m", "s", base + 7 * MINUTE_US, "{}", 1, "-4", "-4", "-4", base + 7 * MINUTE_US, "-4"),
            ("m", "s", base + HOUR_US, "{}", 1, "10", "10", "10", base + HOUR_US + 1, "10"),
            ("m", "s", base - MINUTE_US, "{}", 3, None, None, None, None, None),
            ("m", "t", base + 2 * DAY_US, "{}", 1, "99999999999999999999", "1", "2", 9, "2"),
        ]
        with database.write() as tx:
            tx.execute("DELETE FROM schema_migrations WHERE version = '0400'")
            tx.execute("DROP TABLE usage_hour")
            tx.execute("DROP TABLE usage_day")
            tx.execute("ALTER TABLE usage_minute DROP COLUMN isum")
            for r in rows:
                tx.execute(
                    "INSERT INTO usage_minute (meter_id, subject, minute, group_key, count, sum,"
                    " min, max, latest_time, latest_value) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [*r[:5], *(None if v is None else Decimal(v) for v in r[5:8]), r[8],
                     None if r[9] is None else Decimal(r[9])],
                )  # fmt: skip
        assert [m.version for m in migrate.migrate(database, to_micros(NOW))] == ["0400"]
        with database.read() as tx:
            got = {
                table: sorted(
                    (
                        r[0],
                        int(r[1]),
                        int(r[2]),
                        dec(r[3]),
                        dec(r[4]),
                        dec(r[5]),
                        r[6],
                        dec(r[7]),
                        None if r[8] is None else int(r[8]),
                    )
                    for r in tx.execute(
                        f"SELECT subject, {col}, count, sum, min, max, latest_time, latest_value,"
                        f" isum FROM {table}"
                    )
                )
                for table, col in GRAIN_TABLES
            }
    finally:
        database.close()
    assert [r[-1] for r in got["usage_minute"]] == [None, None, -4, 10, None]
    assert got["usage_hour"] == [
        ("s", base - HOUR_US, 3, None, None, None, None, None, None),
        ("s", base, 3, Decimal("-2.5"), Decimal("-4"), Decimal("1"), base + 7 * MINUTE_US,
         Decimal("-4"), None),
        ("s", base + HOUR_US, 1, Decimal(10), Decimal(10), Decimal(10), base + HOUR_US + 1,
         Decimal(10), 10),
        ("t", base + 2 * DAY_US, 1, Decimal("99999999999999999999"), Decimal(1), Decimal(2), 9,
         Decimal(2), None),
    ]  # fmt: skip
    assert got["usage_day"] == [
        ("s", base - DAY_US, 3, None, None, None, None, None, None),
        ("s", base, 4, Decimal("7.5"), Decimal("-4"), Decimal(10), base + HOUR_US + 1,
         Decimal(10), None),
        ("t", base + 2 * DAY_US, 1, Decimal("99999999999999999999"), Decimal(1), Decimal(2), 9,
         Decimal(2), None),
    ]  # fmt: skip
