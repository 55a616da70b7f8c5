"""Rollup reads on a real database (SQLite and PostgreSQL): every aggregation exact, partial
edge minutes from raw events, subject/group listings. Rows are upserted directly (every grain),
bypassing event extraction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from allotment.container import Container
from allotment.domain.meters import Aggregation, Meter, group_key
from allotment.domain.timeutil import to_micros
from allotment.storage import migrate, usage_fold, usage_read
from allotment.storage.database import Database, open_database
from allotment.storage.usage_write import GRAINS, int_sum
from tests.support import frozen_container

T0 = datetime(2024, 1, 1, tzinfo=UTC)
US_MIN = 60_000_000


def us(minutes: float) -> int:
    return to_micros(T0) + int(minutes * US_MIN)


def meter(aggregation: Aggregation, **kw: object) -> Meter:
    value = None if aggregation is Aggregation.COUNT else "$.v"
    return Meter(
        id=f"m_{aggregation.lower()}",
        slug=f"m_{aggregation.lower()}",
        aggregation=aggregation,
        event_type="ev",
        value_property=value,
        group_by={"model": "$.model"},
        created_at=T0,
        updated_at=T0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    migrate.migrate(database, to_micros(T0))
    yield database
    database.close()


def put_minute(
    db: Database,
    meter_id: str,
    subject: str,
    minute: int,
    model: str,
    count: int,
    total: str | None,
    lo: str | None,
    hi: str | None,
    latest: tuple[int, str] | None,
) -> None:
    """One minute row, upserted into every grain exactly as ingest does (so the hour and day
    rows stay the fold of the minute rows)."""
    d = lambda v: None if v is None else Decimal(v)  # noqa: E731
    with db.write() as tx:
        for grain in GRAINS:
            tx.execute(
                grain.upsert_head + "(?,?,?,?,?,?,?,?,?,?,?)" + grain.upsert_tail,
                [
                    meter_id,
                    subject,
                    minute - minute % grain.step,
                    group_key({"model": model}),
                    count,
                    d(total),
                    d(lo),
                    d(hi),
                    None if latest is None else latest[0],
                    None if latest is None else Decimal(latest[1]),
                    int_sum(d(total)),
                ],
            )


def put_unique(db: Database, meter_id: str, subject: str, minute: int, model: str, v: str) -> None:
    with db.write() as tx:
        tx.execute(
            "INSERT INTO usage_unique (meter_id, subject, minute, group_key, value)"
            " VALUES (?,?,?,?,?)",
            [meter_id, subject, minute, group_key({"model": model}), v],
        )


def put_event(db: Database, subject: str, time_us: int, data: object, eid: str) -> None:
    event = {
        "specversion": "1.0",
        "id": eid,
        "source": "s",
        "type": "ev",
        "subject": subject,
        "time": "x",
        "data": data,
    }
    with db.write() as tx:
        tx.execute(
            "INSERT INTO events (source, id, type, subject, time, ingested_at, event)"
            " VALUES (?,?,?,?,?,?,?)",
            ["s", eid, "ev", subject, time_us, time_us, json.dumps(event)],
        )


def seed_values(db: Database, m: Meter) -> None:
    put_minute(db, m.id, "a", us(0), "x", 2, "0.1", "0.03", "0.07", (us(0) + 5, "0.07"))
    put_minute(db, m.id, "a", us(1), "y", 1, "0.2", "0.2", "0.2", (us(1) + 9, "0.2"))
    put_minute(db, m.id, "b", us(1), "x", 3, "-1.5", "-2", "0.25", (us(1) + 30, "-2"))
    put_minute(db, m.id, "a", us(90), "x", 1, "5", "5", "5", (us(90), "5"))


def total(m: Meter, db: Database, lo: int | None, hi: int | None, **kw: object) -> Decimal | None:
    with db.read() as tx:
        rows, uniques = usage_read.read_usage(tx, m, lo, hi, **kw)  # type: ignore[arg-type]
    cells = usage_fold.fold(m.aggregation, rows, uniques, lambda s, t, g: 0)
    return cells.get(0)


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (Aggregation.SUM, Decimal("-1.2")),
        (Aggregation.COUNT, Decimal(6)),
        (Aggregation.AVG, Decimal("-0.2")),
        (Aggregation.MIN, Decimal("-2")),
        (Aggregation.MAX, Decimal("0.25")),
        (Aggregation.LATEST, Decimal("-2")),
    ],
)
def test_aggregations_over_minute_rows(
    db: Database, aggregation: Aggregation, expected: Decimal
) -> None:
    m = meter(aggregation)
    seed_values(db, m)
    assert total(m, db, us(0), us(60)) == expected


def test_sum_is_exact_and_window_bounds_half_open(db: Database) -> None:
    m = meter(Aggregation.SUM)
    seed_values(db, m)
    assert total(m, db, None, None) == Decimal("3.8")
    assert total(m, db, us(1), us(91)) == Decimal("3.7")
    assert total(m, db, us(0), us(1)) == Decimal("0.1")
    assert total(m, db, us(2), us(90)) is None
    assert total(m, db, us(0), us(60), subjects=["a"]) == Decimal("0.3")
    assert total(m, db, us(0), us(60), subjects=[]) is None


def test_unique_count_counts_distinct_values(db: Database) -> None:
    m = meter(Aggregation.UNIQUE_COUNT)
    for minute, model, v in [(0, "x", "u1"), (0, "y", "u1"), (1, "x", "u2"), (5, "x", "u1")]:
        put_unique(db, m.id, "a", us(minute), model, v)
    assert total(m, db, us(0), us(60)) == 2
    assert total(m, db, us(1), us(60)) == 2
    assert total(m, db, us(2), us(60)) == 1


def test_unaligned_edges_are_read_from_raw_events(db: Database) -> None:
    m = meter(Aggregation.SUM)
    # minute 10 holds three events at :10s, :20s, :50s; the rollup row says 1+2+4
    put_minute(db, m.id, "a", us(10), "x", 3, "7", "1", "4", (us(10.5), "4"))
    put_event(db, "a", us(10) + 10_000_000, {"v": 1, "model": "x"}, "e1")
    put_event(db, "a", us(10) + 20_000_000, {"v": "2", "model": "x"}, "e2")
    put_event(db, "a", us(10) + 50_000_000, {"v": 4, "model": "x"}, "e3")
    put_event(db, "a", us(10) + 55_000_000, {"model": "x"}, "bad")  # no value: skipped
    assert total(m, db, us(10), us(11)) == 7
    assert total(m, db, us(10) + 15_000_000, us(11)) == 6
    assert total(m, db, us(10), us(10) + 20_000_000) == 1
    assert total(m, db, us(10) + 15_000_000, us(10) + 50_000_000) == 2
    assert total(m, db, us(10) + 20_000_001, us(10) + 50_000_000) is None


def test_edges_respect_event_from(db: Database) -> None:
    m = meter(Aggregation.COUNT, event_from=T0 + timedelta(minutes=10, seconds=30))
    put_event(db, "a", us(10) + 10_000_000, None, "e1")
    put_event(db, "a", us(10) + 40_000_000, None, "e2")
    assert total(m, db, us(10) + 1, us(11)) == 1


def test_split_range() -> None:
    assert usage_read.split_range(None, None) == ((None, None), [])
    assert usage_read.split_range(us(1), us(3)) == ((us(1), us(3)), [])
    assert usage_read.split_range(us(1) + 1, us(4) - 1) == (
        (us(2), us(3)),
        [(us(1) + 1, us(2)), (us(3), us(4) - 1)],
    )
    # no whole minute in between: everything from raw events
    assert usage_read.split_range(us(1) + 1, us(3) - 1) == (None, [(us(1) + 1, us(3) - 1)])
    assert usage_read.split_range(us(1) + 1, us(1) + 5) == (None, [(us(1) + 1, us(1) + 5)])
    assert usage_read.split_range(us(1) + 1, us(2)) == (None, [(us(1) + 1, us(2))])


def test_listings(db: Database) -> None:
    m = meter(Aggregation.SUM)
    seed_values(db, m)
    with db.read() as tx:
        assert usage_read.distinct_subjects(tx, m.id, None, None) == ["a", "b"]
        assert usage_read.distinct_subjects(tx, m.id, us(2), None) == ["a"]
        keys = usage_read.distinct_group_keys(tx, m.id, us(0), us(2))
        assert sorted(keys) == [group_key({"model": "x"}), group_key({"model": "y"})]
        assert usage_read.minute_span(tx, m.id, None, None) == (us(0), us(90))
        assert usage_read.minute_span(tx, m.id, us(2), us(3)) is None


@pytest.fixture
def container(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, T0) as c:
        yield c


def _service_meter(c: Container, aggregation: str) -> Meter:
    body = {
        "slug": f"s_{aggregation.lower()}",
        "aggregation": aggregation,
        "eventType": "ev",
        "groupBy": {"model": "$.model"},
    }
    if aggregation != "COUNT":
        body["valueProperty"] = "$.v"
    return c.meters.create(body)


def test_usage_series_through_the_service(container: Container) -> None:
    c = container
    m = _service_meter(c, "SUM")
    put_minute(c.db, m.id, "a", us(0), "x", 2, "0.1", None, None, (us(0) + 5, "0.05"))
    put_minute(c.db, m.id, "a", us(0), "y", 1, "0.2", None, None, (us(0) + 9, "0.2"))
    put_minute(c.db, m.id, "a", us(5), "x", 1, "1", None, None, (us(5), "1"))
    put_minute(c.db, m.id, "b", us(5), "x", 1, "100", None, None, (us(5), "100"))
    end = T0 + timedelta(hours=1)
    s = c.meter_queries.usage_series(m.slug, "a", None, T0, end)
    assert s.total(T0, end) == Decimal("1.3")
    assert s.total(T0, T0 + timedelta(minutes=5)) == Decimal("0.3")
    only_x = c.meter_queries.usage_series(m.id, "a", {"model": "x"}, T0, end)
    assert only_x.total(T0, end) == Decimal("1.1")
    none = c.meter_queries.usage_series(m.id, "a", {"model": "zzz"}, T0, end)
    assert none.total(T0, end) == 0


def test_usage_series_count_latest_unique(container: Container) -> None:
    c = container
    end = T0 + timedelta(hours=1)
    count = _service_meter(c, "COUNT")
    put_minute(c.db, count.id, "a", us(1), "x", 3, None, None, None, None)
    put_minute(c.db, count.id, "a", us(2), "y", 4, None, None, None, None)
    assert c.meter_queries.usage_series(count.id, "a", None, T0, end).total(T0, end) == 7
    latest = _service_meter(c, "LATEST")
    put_minute(c.db, latest.id, "a", us(1), "x", 1, "5", None, None, (us(1) + 50, "5"))
    put_minute(c.db, latest.id, "a", us(1), "y", 1, "7", None, None, (us(1) + 10, "7"))
    put_minute(c.db, latest.id, "a", us(3), "y", 1, "-2.5", None, None, (us(3), "-2.5"))
    s = c.meter_queries.usage_series(latest.id, "a", None, T0, end)
    assert s.latest(T0, end) == Decimal("-2.5")
    assert s.latest(T0, T0 + timedelta(minutes=3)) == 5
    only_y = c.meter_queries.usage_series(latest.id, "a", {"model": "y"}, T0, end)
    assert only_y.latest(T0, T0 + timedelta(minutes=3)) == 7
    uniq = _service_meter(c, "UNIQUE_COUNT")
    for minute, model, v in [(0, "x", "u1"), (0, "y", "u1"), (1, "x", "u2"), (5, "y", "u3")]:
        put_unique(c.db, uniq.id, "a", us(minute), model, v)
    s = c.meter_queries.usage_series(uniq.id, "a", None, T0, end)
    assert s.unique(T0, end) == 3
    assert s.unique(T0 + timedelta(minutes=1), end) == 2
    assert c.meter_queries.usage_series(uniq.id, "a", {"model": "x"}, T0, end).unique(T0, end) == 2
