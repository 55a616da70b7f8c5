"""The per-meter rollups (``storage/meter_rollup.py``) on a real database (SQLite and
PostgreSQL): a meter query over every subject, answered from them, equals a naive count of
the raw events — whatever order the events arrive in (late events), however the deferred fold
cuts them, with exact decimals past 28 digits and sums past the integer shadow; the rows are
always the per-subject rows added up (after rebuilds too); the migration's backfill writes
what the fold writes."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta, tzinfo
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.container import Container
from allotment.domain.events import validate_event
from allotment.domain.meters import Aggregation
from allotment.domain.windows import WindowSize, floor_window, next_window, parse_time_zone
from allotment.services.meter_queries import MeterQuery, MeterQueryRow
from allotment.storage import meter_rollup, migrate, usage_write
from allotment.storage.database import split_statements
from allotment.storage.usage_fold import AVG_CONTEXT
from tests.storage.test_query_totals import H0, NOW, SPAN_S, ZONES, _meter
from tests.support import fold_tail, frozen_container

VALUES = st.one_of(
    st.integers(-1000, 1000).map(Decimal),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False),
    st.sampled_from(
        [
            Decimal(2**53),
            Decimal(2**60),
            Decimal("1e15"),
            Decimal("0.10"),
            Decimal("12345678901234567890.123456789012345678"),  # 38 digits
        ]
    ),
)
EVENT = st.tuples(
    st.integers(0, SPAN_S * 1000 - 1),  # milliseconds after H0
    VALUES,
    st.sampled_from(["a", "b", None]),
    st.sampled_from(["s1", "s2", "s3", "s4"]),
)
Raw = tuple[int, Decimal, str | None, str]
_example = iter(range(10**9))


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


def _ingest(c: Container, slug: str, raw: list[tuple[int, Raw]]) -> None:
    events = []
    for k, (ms, value, model, subject) in raw:
        data: dict[str, Any] = {"v": value}
        if model is not None:
            data["model"] = model
        event = {
            "specversion": "1.0",
            "id": f"{slug}-{k}",
            "source": "t",
            "type": slug,
            "subject": subject,
            "time": (H0 + timedelta(milliseconds=ms)).isoformat(),
            "data": data,
        }
        events.append(validate_event(event, "event", NOW))
    c.events.ingest(events)


def _naive_start(at: datetime, size: WindowSize, tz: tzinfo) -> datetime:
    """The window of an instant, from its local wall time (no window arithmetic of ours)."""
    local = at.astimezone(tz)
    if size is WindowSize.HOUR:
        start = local.replace(minute=0, second=0, microsecond=0)
    elif size is WindowSize.DAY:
        start = datetime.combine(local.date(), time(), tzinfo=tz)
    else:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
    return start.astimezone(UTC)


def _naive(
    raw: list[Raw],
    aggregation: Aggregation,
    size: WindowSize,
    tz: tzinfo,
    lo: datetime,
    hi: datetime,
    by_model: bool,
) -> dict[tuple[datetime, str | None], Decimal]:
    """(window start, model) → the value, from the raw events, with 100-digit arithmetic."""
    cells: dict[tuple[datetime, str | None], list[Decimal]] = {}
    for ms, value, model, _subject in raw:
        at = H0 + timedelta(milliseconds=ms)
        if lo <= at < hi:
            key = (_naive_start(at, size, tz), (model or "") if by_model else None)
            cells.setdefault(key, []).append(value)
    out = {}
    with localcontext() as ctx:
        ctx.prec = 100
        for key, values in cells.items():
            total = sum(values, Decimal(0))
            if aggregation is Aggregation.COUNT:
                out[key] = Decimal(len(values))
            elif aggregation is Aggregation.AVG:
                out[key] = AVG_CONTEXT.divide(total, Decimal(len(values)))
            else:
                out[key] = total
    return out


def _got(rows: list[MeterQueryRow], by_model: bool) -> dict[tuple[datetime, str | None], Decimal]:
    out = {}
    for r in rows:
        assert r.subject is None
        key = (r.window_start, r.group_by.get("model") if by_model else None)
        assert key not in out
        out[key] = Decimal(r.value)
    return out


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many per-meter rows each read of them returned."""
    seen: list[int] = []
    real = meter_rollup.read_totals

    def spy(*args: Any) -> list[Any]:
        rows = real(*args)
        seen.append(len(rows))
        return rows

    monkeypatch.setattr(meter_rollup, "read_totals", spy)
    return seen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(EVENT, min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 40), max_size=3),
    aggregation=st.sampled_from([Aggregation.SUM, Aggregation.COUNT, Aggregation.AVG]),
    window=st.sampled_from(["HOUR", "DAY", "MONTH"]),
    zone=st.sampled_from(ZONES),
    bounds=st.tuples(st.integers(-30, SPAN_S // 3600 + 30), st.integers(1, 200)),
    by_model=st.booleans(),
)
def test_all_subjects_queries_equal_the_naive_count_of_the_raw_events(
    c: Container,
    monkeypatch: pytest.MonkeyPatch,
    raw: list[Raw],
    order: random.Random,
    cuts: list[int],
    aggregation: Aggregation,
    window: str,
    zone: str,
    bounds: tuple[int, int],
    by_model: bool,
) -> None:
    """Events arrive in a shuffled order (later ones often earlier in time) in requests cut at
    ``cuts``; after each request but the last the tail is folded or left, and a query between
    requests must count exactly what has arrived. Windows start on the zone's hours, days or
    months; the range is whole windows (the console's charts)."""
    slug = f"mr{next(_example)}"
    _meter(c, slug, aggregation)
    size, tz = WindowSize(window), parse_time_zone(zone)
    lo = floor_window(H0 + timedelta(hours=bounds[0]), size, tz)
    hi = lo
    for _ in range(1 + bounds[1] // (1 if size is WindowSize.HOUR else 60)):
        hi = next_window(hi, size, tz)
    q = MeterQuery(from_=lo, to=hi, window_size=size, time_zone=tz,
                   group_by=("model",) if by_model else ())  # fmt: skip
    arrival = list(enumerate(raw))
    order.shuffle(arrival)
    points = sorted({0, len(arrival), *(min(x, len(arrival)) for x in cuts)})
    seen = _spy(monkeypatch)
    arrived: list[Raw] = []
    for n, (a, z) in enumerate(itertools.pairwise(points)):
        part = arrival[a:z]
        _ingest(c, slug, part)
        arrived += [e for _, e in part]
        if n % 2 == 0:  # a query between requests: folds the tail, counts what arrived
            want = _naive(arrived, aggregation, size, tz, lo, hi, by_model)
            assert _got(c.meter_queries.query(slug, q).rows, by_model) == want
    want = _naive(raw, aggregation, size, tz, lo, hi, by_model)
    assert _got(c.meter_queries.query(slug, q).rows, by_model) == want
    if zone != "Asia/Kolkata" or size is not WindowSize.HOUR:
        assert seen  # whole hours or days: read from the per-meter rows


def _meter_rows(c: Container) -> dict[tuple[str, int, int, str], tuple[int, Any]]:
    """Every per-meter row: (meter, table step, bucket, group) → (count, sum); checks that
    each integer shadow is NULL or the sum."""
    fold_tail(c.db)
    out = {}
    with c.db.read() as tx:
        for step, table in meter_rollup.TABLES.items():
            for r in tx.execute(
                f"SELECT meter_id, bucket, group_key, count, sum, isum FROM {table}"
            ):
                total = None if r[4] is None else Decimal(str(r[4]))
                assert r[5] is None or (type(r[5]) is int and r[5] == total), r
                out[str(r[0]), step, int(r[1]), str(r[2])] = (int(r[3]), total)
    return out


def _subject_rows_added_up(c: Container) -> dict[tuple[str, int, int, str], tuple[int, Any]]:
    """The per-subject hour and day rows added up over subjects, in Python."""
    fold_tail(c.db)
    sums: dict[tuple[str, int, int, str], tuple[int, Decimal | None]] = {}
    with c.db.read() as tx, localcontext() as ctx:
        ctx.prec = 100
        for grain in (usage_write.HOUR_GRAIN, usage_write.DAY_GRAIN):
            for r in tx.execute(
                f"SELECT meter_id, bucket, group_key, count, sum FROM {grain.table}"
            ):
                key = (str(r[0]), grain.step, int(r[1]), str(r[2]))
                count, total = sums.get(key, (0, None))
                if r[4] is not None:
                    total = Decimal(str(r[4])) + (total or 0)
                sums[key] = (count + int(r[3]), total)
    return dict(sums)


def test_the_rows_are_the_subject_rows_added_up_through_rebuilds_and_deletes(
    c: Container,
) -> None:
    rng = random.Random(20)
    for slug, aggregation in (("sums", Aggregation.SUM), ("counts", Aggregation.COUNT)):
        _meter(c, slug, aggregation)
        values = [Decimal(2**52), Decimal("0.001"), Decimal(7), Decimal("-2.5")]
        raw = [
            (i, (rng.randrange(SPAN_S * 1000), rng.choice(values), rng.choice(["a", None]),
                 f"s{rng.randrange(30)}"))
            for i in range(300)
        ]  # fmt: skip
        for start in range(0, 300, 70):
            _ingest(c, slug, raw[start : start + 70])
            if start % 140 == 0:
                fold_tail(c.db)
    rows = _meter_rows(c)
    assert rows == _subject_rows_added_up(c)
    assert any(total is not None and total > 2**53 for _, total in rows.values())
    assert len({k[0] for k in rows}) == 2
    sums = c.meters.get("sums")
    c.meters.update("sums", {"groupBy": {"model": "$.model", "tier": "$.tier"}})  # a rebuild
    assert _meter_rows(c) == _subject_rows_added_up(c)
    c.meters.delete("counts")
    rows = _meter_rows(c)
    assert rows == _subject_rows_added_up(c)
    assert {k[0] for k in rows} == {sums.id}


def test_the_migration_backfill_writes_what_the_fold_writes(c: Container) -> None:
    _meter(c, "backfilled", Aggregation.SUM)
    rng = random.Random(7)
    values = [Decimal(2**53), Decimal(1), Decimal("0.25"), Decimal("1e-18")]
    _ingest(c, "backfilled", [
        (i, (rng.randrange(SPAN_S * 1000), rng.choice(values), rng.choice(["a", "b"]),
             f"s{rng.randrange(9)}"))
        for i in range(200)
    ])  # fmt: skip
    folded = _meter_rows(c)
    (step,) = [m for m in migrate.available(c.db.dialect) if m.version == "0850"]
    with c.db.write() as tx:
        for table in meter_rollup.TABLES.values():
            tx.execute(f"DELETE FROM {table}")
        for statement in split_statements(step.script):
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
                tx.execute(statement)
    assert _meter_rows(c) == folded
    assert folded


def test_a_subject_filter_or_subject_group_by_reads_the_subject_rows(
    c: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _meter(c, "per_subject", Aggregation.SUM)
    _ingest(c, "per_subject", [(0, (60_000, Decimal(2), "a", "s1")),
                               (1, (120_000, Decimal(3), "a", "s2"))])  # fmt: skip
    seen = _spy(monkeypatch)
    day = MeterQuery(from_=H0, to=H0 + timedelta(days=1), window_size=WindowSize.DAY)
    assert [r.value for r in c.meter_queries.query("per_subject", day).rows] == [5]
    assert seen == [1]
    by_subject = MeterQuery(from_=H0, to=H0 + timedelta(days=1), window_size=WindowSize.DAY,
                            group_by=("subject",))  # fmt: skip
    rows = c.meter_queries.query("per_subject", by_subject).rows
    assert [(r.subject, r.value) for r in rows] == [("s1", 2), ("s2", 3)]
    one = MeterQuery(from_=H0, to=H0 + timedelta(days=1), window_size=WindowSize.DAY,
                     subjects=("s2",))  # fmt: skip
    assert [r.value for r in c.meter_queries.query("per_subject", one).rows] == [3]
    assert seen == [1]  # neither read the per-meter rows
