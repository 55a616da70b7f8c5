"""The totals lane of the meter query (``storage/query_totals.py``) on a real database (SQLite
and PostgreSQL): for SUM, COUNT and AVG it answers exactly what the general lane (rows folded
by ``usage_fold.fold``) answers, row for row and digit for digit, whatever the windows, time
zone, subjects, groupBy and filterGroupBy; the SQLite plan choice changes only the cost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from allotment.container import Container
from allotment.domain.events import validate_event
from allotment.domain.meters import Aggregation
from allotment.domain.timeutil import to_micros
from allotment.domain.usage_series import GroupFilter
from allotment.domain.windows import WindowSize, parse_time_zone
from allotment.http.responses import encode
from allotment.http.routes.meter_queries import csv_value
from allotment.services.meter_queries import MeterQuery, MeterQueryRow
from allotment.storage import query_totals, usage_fold, usage_read
from allotment.storage.query_totals import add, fold_totals, total_value
from allotment.storage.usage_write import DAY_GRAIN, HOUR_GRAIN, ISUM_MAX
from tests.support import frozen_container

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
H0 = datetime(2025, 3, 29, 0, 0, tzinfo=UTC)  # Budapest springs forward on 2025-03-30
SPAN_S = 4 * 86_400
ZONES = ("UTC", "Europe/Budapest", "Asia/Kolkata")
VALUES = st.one_of(
    st.integers(-1000, 1000).map(Decimal),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False),
    st.sampled_from([Decimal(ISUM_MAX), Decimal(2**60), Decimal("1e15"), Decimal("0.10")]),
)
EVENT = st.tuples(
    st.integers(0, SPAN_S * 1000 - 1),  # milliseconds after H0
    VALUES,
    st.sampled_from(["a", "b", None]),
    st.sampled_from(["s1", "s2", "s3"]),
)
OFFSET = st.integers(-3_600, SPAN_S + 3_600)  # seconds after H0
_example = iter(range(10**9))


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


def _meter(c: Container, slug: str, aggregation: Aggregation) -> None:
    body: dict[str, Any] = {
        "slug": slug,
        "aggregation": aggregation.value,
        "eventType": slug,
        "groupBy": {"model": "$.model"},
    }
    if aggregation is not Aggregation.COUNT:
        body["valueProperty"] = "$.v"
    c.meters.create(body)


def _ingest(c: Container, slug: str, raw: list[tuple[int, Decimal, str | None, str]]) -> None:
    events = []
    for k, (ms, value, model, subject) in enumerate(raw):
        data: dict[str, Any] = {"v": value}
        if model is not None:
            data["model"] = model
        at = H0 + timedelta(milliseconds=ms)
        event = {
            "specversion": "1.0",
            "id": f"{slug}-{k}",
            "source": "t",
            "type": slug,
            "subject": subject,
            "time": at.isoformat(),
            "data": data,
        }
        events.append(validate_event(event, "event", NOW))
    c.events.ingest(events)


def _both_lanes(
    c: Container, slug: str, q: MeterQuery, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[MeterQueryRow], list[MeterQueryRow], bool]:
    """(totals lane rows, general lane rows, whether the totals lane ran)."""
    ran = []
    real = query_totals.read_totals

    def spy(*args: Any, **kwargs: Any) -> list[query_totals.TotalRow] | None:
        out = real(*args, **kwargs)
        ran.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(query_totals, "read_totals", spy)
        fast = c.meter_queries.query(slug, q).rows
    with monkeypatch.context() as m:
        m.setattr(query_totals, "read_totals", lambda *a, **k: None)
        general = c.meter_queries.query(slug, q).rows
    return fast, general, any(ran)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(EVENT, min_size=1, max_size=30),
    aggregation=st.sampled_from([Aggregation.SUM, Aggregation.COUNT, Aggregation.AVG]),
    window=st.sampled_from([None, "HOUR", "DAY", "MONTH"]),
    zone=st.sampled_from(ZONES),
    bounds=st.tuples(OFFSET, OFFSET),
    open_from=st.booleans(),
    by_model=st.booleans(),
    by_subject=st.booleans(),
    subjects=st.sampled_from([None, ("s1",), ("s1", "s3"), ("nobody",)]),
    only=st.sampled_from([None, "a", ""]),
)
@example(  # found by CI: an open `from` whose range holds no usage skips both lanes
    raw=[(0, Decimal(0), "a", "s1")],
    aggregation=Aggregation.SUM,
    window="HOUR",
    zone="UTC",
    bounds=(-1, -1),
    open_from=True,
    by_model=False,
    by_subject=False,
    subjects=None,
    only=None,
)
def test_totals_lane_equals_the_general_lane(
    c: Container,
    monkeypatch: pytest.MonkeyPatch,
    raw: list[tuple[int, Decimal, str | None, str]],
    aggregation: Aggregation,
    window: str | None,
    zone: str,
    bounds: tuple[int, int],
    open_from: bool,
    by_model: bool,
    by_subject: bool,
    subjects: tuple[str, ...] | None,
    only: str | None,
) -> None:
    slug = f"lane{next(_example)}"
    _meter(c, slug, aggregation)
    _ingest(c, slug, raw)
    lo, hi = sorted(bounds)
    q = MeterQuery(
        from_=None if open_from and window else H0 + timedelta(seconds=lo),
        to=H0 + timedelta(seconds=hi + 1),
        window_size=None if window is None else WindowSize(window),
        time_zone=parse_time_zone(zone),
        subjects=subjects,
        group_by=(("model",) if by_model else ()) + (("subject",) if by_subject else ()),
        filters=() if only is None else (GroupFilter("model", "$eq", only),),
    )
    fast, general, ran = _both_lanes(c, slug, q, monkeypatch)
    # the lane is skipped only when an open bound finds no usage to close it (no rows at all)
    assert ran or (fast == general == [] and q.from_ is None)
    assert fast == general
    assert [str(r.value) for r in fast] == [str(r.value) for r in general]  # same plain form
    # and the same bytes on the wire: an int value renders as its plain Decimal would
    assert encode(fast) == encode(general)
    assert [csv_value(r.value) for r in fast] == [csv_value(r.value) for r in general]


@pytest.mark.parametrize(
    "aggregation",
    [Aggregation.MIN, Aggregation.MAX, Aggregation.LATEST, Aggregation.UNIQUE_COUNT],
)
def test_other_aggregations_take_the_general_lane(
    c: Container, monkeypatch: pytest.MonkeyPatch, aggregation: Aggregation
) -> None:
    body: dict[str, Any] = {
        "slug": "other",
        "aggregation": aggregation.value,
        "eventType": "other",
        "valueProperty": "$.v",
    }
    c.meters.create(body)
    _ingest_other = [
        validate_event(
            {
                "specversion": "1.0",
                "id": str(i),
                "source": "t",
                "type": "other",
                "subject": "s1",
                "time": (H0 + timedelta(minutes=i)).isoformat(),
                "data": {"v": i},
            },
            "event",
            NOW,
        )
        for i in range(3)
    ]
    c.events.ingest(_ingest_other)
    q = MeterQuery(from_=H0, to=H0 + timedelta(days=1), window_size=WindowSize.HOUR)
    fast, general, ran = _both_lanes(c, "other", q, monkeypatch)
    assert not ran
    assert fast == general
    assert len(fast) == 1


def test_one_row_per_bucket_reads_need_no_group_by(
    c: Container, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """DAY windows over whole UTC days read day rows as they are (a plain select, no GROUP
    BY): exact for decimal sums, integer sums and sums past the integer shadow's range."""
    _meter(c, "plain", Aggregation.SUM)
    day_ms = 86_400_000
    _ingest(
        c,
        "plain",
        [
            (0, Decimal(1), "a", "s1"),
            (60_000, Decimal("0.25"), "a", "s1"),
            (day_ms + 5, Decimal(2**52), "a", "s1"),
            (day_ms + 7, Decimal(1), "a", "s1"),
            (2 * day_ms, Decimal(2**60), "a", "s1"),
            (2 * day_ms + 1, Decimal(1), "a", "s1"),
        ],
    )
    seen: list[str] = []
    meter = c.meters.get("plain")
    t0, day = to_micros(H0), 86_400_000_000
    cuts = [t0, t0 + day, t0 + 2 * day, t0 + 3 * day]
    with c.db.read() as tx:
        real = tx.execute

        def spy(sql: str, params: Any = ()) -> Any:
            seen.append(sql)
            return real(sql, params)

        monkeypatch.setattr(tx, "execute", spy)
        b = usage_read.Bucketing(t0, 3_600_000_000, True, True)
        rows = query_totals.read_totals(tx, meter, cuts[0], cuts[-1], None, b, cuts)
    assert rows is not None
    totals = {r[2]: r[4] for r in rows}
    assert totals == {t0: Decimal("1.25"), t0 + day: 2**52 + 1, t0 + 2 * day: 2**60 + 1}
    assert any("usage_day" in s and "GROUP BY" not in s for s in seen)
    if backend == "sqlite":  # integer sums stay ints on the way (PostgreSQL: NUMERIC)
        assert type(totals[t0 + day]) is int


def test_sqlite_scans_the_meter_when_the_range_covers_most_of_it(
    c: Container, backend: str
) -> None:
    _meter(c, "scan", Aggregation.SUM)
    _ingest(c, "scan", [(d * 86_400_000, Decimal(1), "a", "s1") for d in range(4)])
    meter = c.meters.get("scan")
    day = 86_400_000_000
    t0 = to_micros(H0)
    choose = query_totals._ranged_column
    with c.db.read() as tx:
        whole = choose(tx, meter, DAY_GRAIN, [(t0, t0 + 4 * day)], None)
        one_day = choose(tx, meter, DAY_GRAIN, [(t0, t0 + day)], None)
        one_subject = choose(tx, meter, DAY_GRAIN, [(t0, t0 + 4 * day)], ["s1"])
        no_rows = choose(tx, meter, HOUR_GRAIN, [(t0 - 10 * day, t0 - 9 * day)], None)
    if backend == "sqlite":
        assert whole == "+bucket"
    else:
        assert whole == "bucket"  # PostgreSQL plans from its own statistics
    assert one_day == one_subject == "bucket"
    assert no_rows == "bucket"


def test_exact_adds_and_values() -> None:
    assert add(2**60, 1) == 2**60 + 1
    assert type(add(2**60, 1)) is int
    assert add(2**60, Decimal("0.1")) == Decimal(2**60) + Decimal("0.1")
    assert add(Decimal("0.1"), Decimal("0.2")) == Decimal("0.3")
    assert str(total_value(Aggregation.SUM, 2, 100)) == "100"
    assert str(total_value(Aggregation.SUM, 2, Decimal("1.50"))) == "1.5"
    assert str(total_value(Aggregation.SUM, 2, Decimal("1E+2"))) == "100"
    assert total_value(Aggregation.SUM, 2, None) is None
    assert total_value(Aggregation.COUNT, 2, None) == 2
    assert total_value(Aggregation.AVG, 3, 1) == usage_fold.AVG_CONTEXT.divide(
        Decimal(1), Decimal(3)
    )
    cells = fold_totals(
        Aggregation.SUM,
        [("s", "{}", 0, 1, 1), ("s", "{}", 5, 1, Decimal("0.5")), ("s", "{}", 99, 1, None)],
        lambda at: None if at == 99 else 0,
        lambda gkey: (),
        by_subject=True,
    )
    assert cells == {(0, "s", ()): Decimal("1.5")}
    ints = fold_totals(
        Aggregation.SUM,
        [("s", "{}", 0, 1, 2**60), ("s", "{}", 5, 1, 1), ("t", "{}", 0, 2, None)],
        lambda at: 0,
        lambda gkey: (),
        by_subject=True,
    )
    assert ints == {(0, "s", ()): 2**60 + 1}  # integer sums stay exact ints, no cell for t
    assert type(ints[(0, "s", ())]) is int
    counts = fold_totals(
        Aggregation.COUNT,
        [("s", "{}", 0, 3, None), ("s", "{}", 5, 4, Decimal("0.5"))],
        lambda at: 0,
        lambda gkey: (),
        by_subject=False,
    )
    assert counts == {(0, "", ()): 7}
