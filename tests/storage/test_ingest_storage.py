"""Ingest on a real database (SQLite and PostgreSQL): exactly-once storage, rollups written in
the same transaction, meter backfill/rebuild/delete, config sync, and the event listing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.errors import Conflict, InvalidInput, NotFound, Unavailable
from allotment.domain.events import CloudEvent, validate_event
from allotment.domain.timeutil import floor_minute_us, to_micros
from allotment.services.events import EventQuery, prepare
from allotment.storage.database import open_database
from tests.support import fold_tail

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2025, 5, 30, 10, 0, tzinfo=UTC)

MakeContainer = Callable[..., Container]


@pytest.fixture
def make_container(db_url: str) -> Iterator[MakeContainer]:
    """Containers on the same database (like server processes sharing one database)."""
    made: list[Container] = []

    def make(meters: tuple[dict[str, Any], ...] = ()) -> Container:
        settings = Settings(db_url=db_url, meters=meters)
        c = Container(settings, open_database(db_url), FrozenClock(NOW))
        c.start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def c(make_container: MakeContainer) -> Container:
    return make_container()


def ev(
    i: int | str,
    *,
    minutes: float = 0,
    type: str = "prompt",
    subject: str = "cust",
    source: str = "app",
    data: Any = None,
    **more: Any,
) -> CloudEvent:
    raw: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(i),
        "source": source,
        "type": type,
        "subject": subject,
        "time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "data": data if data is not None else {"tokens": 1, "model": "gpt"},
        **more,
    }
    return validate_event(raw, "event", NOW)


def sum_meter(c: Container, slug: str, aggregation: str = "SUM", **more: Any) -> str:
    body = {"slug": slug, "aggregation": aggregation, "eventType": "prompt", **more}
    if aggregation != "COUNT" and "valueProperty" not in more:
        body["valueProperty"] = "$.tokens"
    return c.meters.create(body).id


def rollup(c: Container, meter_id: str) -> list[tuple[Any, ...]]:
    fold_tail(c.db)
    with c.db.read() as tx:
        rows = tx.execute(
            "SELECT subject, minute, group_key, count, sum, min, max, latest_time, latest_value "
            "FROM usage_minute WHERE meter_id = ? ORDER BY subject, minute, group_key",
            (meter_id,),
        )
    return [
        (
            r[0],
            r[1],
            r[2],
            int(r[3]),
            *(None if v is None else Decimal(str(v)).normalize() for v in (r[4], r[5], r[6])),
            r[7],
            None if r[8] is None else Decimal(str(r[8])).normalize(),
        )
        for r in rows
    ]


def totals(c: Container, meter_id: str) -> tuple[int, Decimal]:
    rows = rollup(c, meter_id)
    return sum(r[3] for r in rows), sum((r[4] or Decimal(0) for r in rows), Decimal(0))


def stored_count(c: Container) -> int:
    with c.db.read() as tx:
        row = tx.one("SELECT count(*) FROM events")
    assert row is not None
    return int(row[0])


def test_duplicates_within_a_batch_and_across_retries_count_once(c: Container) -> None:
    mid = sum_meter(c, "tokens")
    batch = [ev(1), ev(1, data={"tokens": 100}), ev(2), ev(2, source="other")]
    assert c.events.ingest(batch) == 3
    assert c.events.ingest(batch) == 0
    assert c.events.ingest([ev(1), ev(3)]) == 1
    assert stored_count(c) == 4
    assert totals(c, mid) == (4, Decimal(4))  # the first e1 (tokens=1) won


def test_a_large_group_keeps_the_first_of_each_repeat_across_statements(c: Container) -> None:
    """SQLite appends a group 100 rows to a statement (``events_repo._INSERT_ROWS``): a repeat
    just across a statement boundary, one in a later request of the group, and one in the
    group's last, shorter statement are each refused; the first counts, and each request is
    told its own count."""
    mid = sum_meter(c, "tokens")
    big = {"tokens": 100, "model": "gpt"}
    first = [ev(i) for i in range(100)] + [ev(99, data=big)] + [ev(i) for i in range(100, 150)]
    second = [ev(5, data=big)] + [ev(i) for i in range(150, 250)] + [ev(249, data=big)]
    counts = c.events.write_batches([[prepare(e) for e in first], [prepare(e) for e in second]])
    assert counts == [150, 100]
    assert stored_count(c) == 250
    assert totals(c, mid) == (250, Decimal(250))


def test_each_row_keeps_its_own_source_and_type_in_mixed_and_uniform_statements(
    c: Container,
) -> None:
    """SQLite binds a statement's source and type once when all its rows share them
    (``events_repo._insert_rows``): statements where they are shared, where only one is, and
    where neither is each store every row's own columns and JSON, and the meter counts only
    its type."""
    mid = sum_meter(c, "tokens")
    uniform = [ev(i) for i in range(100)]  # one source, one type
    other_type = [ev(i, type="click" if i % 7 == 0 else "prompt") for i in range(100, 200)]
    other_source = [ev(i, source=f"app{i % 3}") for i in range(200, 300)]
    mixed = [ev(i, source=f"s{i % 2}", type=("prompt", "view")[i % 3 % 2]) for i in range(300, 350)]
    batches = [uniform, other_type, other_source, mixed]
    counts = c.events.write_batches([[prepare(e) for e in b] for b in batches])
    assert counts == [100, 100, 100, 50]
    with c.db.read() as tx:
        stored = {
            (str(r[0]), str(r[1])): (str(r[2]), str(r[3]), str(r[4]))
            for r in tx.execute("SELECT source, id, type, subject, event FROM events")
        }
    sent = [e for b in batches for e in b]
    assert len(stored) == len(sent)
    for e in sent:
        type_, subject, event = stored[(e.source, e.id)]
        assert (type_, subject) == (e.type, e.subject)
        assert msgspec.json.decode(event) == msgspec.json.decode(msgspec.json.encode(e.to_wire()))
    prompts = sum(1 for e in sent if e.type == "prompt")
    assert totals(c, mid) == (prompts, Decimal(prompts))


def test_a_duplicate_with_another_time_counts_once_and_is_removed(c: Container) -> None:
    """The ingest's dedup index is time-led (time, source, id): a retry carrying another time
    (an event sent without time is stamped at ingest) is only refused by the fold; before and
    after it, every read counts the first event once, and the listing shows it once."""
    mid = sum_meter(c, "tokens")
    c.events.ingest([ev(1, data={"tokens": 5}), ev(2, data={"tokens": 7})])
    assert totals(c, mid) == (2, Decimal(12))
    # later retries with other times and payloads, in other requests and in one group
    c.events.write_batches(
        [
            [prepare(ev(1, minutes=30, data={"tokens": 100}))],
            [prepare(ev(2, minutes=-30)), prepare(ev(3, minutes=5))],
        ]
    )
    c.events.write_batches([[prepare(ev(3, minutes=9, data={"tokens": 50}))]])
    assert totals(c, mid) == (3, Decimal(13))  # e1=5, e2=7 and the first e3 (tokens=1)
    assert stored_count(c) == 3
    listed = c.events.list(EventQuery(from_=T0 - timedelta(days=1)))
    assert sorted(item["event"]["id"] for item in listed) == ["1", "2", "3"]
    # and a year later still
    c.events.ingest([ev(1, minutes=365 * 24 * 60, data={"tokens": 1000})])
    assert totals(c, mid) == (3, Decimal(13))
    assert stored_count(c) == 3


def test_new_events_after_the_newest_row_was_removed_as_a_duplicate_still_count(
    c: Container,
) -> None:
    """SQLite hands out the largest ``seq`` + 1: once the fold deleted the newest row (a
    duplicate), a new event must still get a ``seq`` above the fold's watermark."""
    mid = sum_meter(c, "tokens")
    c.events.ingest([ev(1), ev(2)])
    c.events.write_batches([[prepare(ev(2, minutes=3))]])  # the newest row, a duplicate
    assert totals(c, mid) == (2, Decimal(2))  # folded: the duplicate row is gone
    c.events.write_batches([[prepare(ev(3)), prepare(ev(4, minutes=1))]])
    c.events.write_batches([[prepare(ev(5, minutes=2))]])
    assert totals(c, mid) == (5, Decimal(5))
    assert stored_count(c) == 5


def test_rollup_columns_for_every_aggregation(c: Container) -> None:
    ids = {
        agg: sum_meter(
            c, agg.lower(), agg, **({"valueProperty": "$.user"} if agg == "UNIQUE_COUNT" else {})
        )
        for agg in ("SUM", "COUNT", "MIN", "MAX", "AVG", "LATEST", "UNIQUE_COUNT")
    }
    events = [
        ev(1, minutes=0.5, data={"tokens": "2.5", "user": "u1"}),
        ev(2, minutes=0.1, data={"tokens": 7, "user": "u2"}),  # earlier in time, later in the batch
        ev(3, minutes=0.9, data={"tokens": Decimal("-1"), "user": "u1"}),
        ev(4, minutes=0.2, data={"tokens": "NaN", "user": "u3"}),  # does not fit value meters
    ]
    c.events.ingest(events)
    minute = floor_minute_us(to_micros(T0))
    latest_t = to_micros(T0 + timedelta(minutes=0.9))
    assert rollup(c, ids["SUM"]) == [
        ("cust", minute, "{}", 3, Decimal("8.5"), Decimal(-1), Decimal(7), latest_t, Decimal(-1))
    ]
    assert rollup(c, ids["COUNT"]) == [("cust", minute, "{}", 4, None, None, None, None, None)]
    with c.db.read() as tx:
        uniq = tx.execute(
            "SELECT value FROM usage_unique WHERE meter_id = ? ORDER BY value",
            (ids["UNIQUE_COUNT"],),
        )
    assert [r[0] for r in uniq] == ["u1", "u2", "u3"]
    # a later batch with an older event does not replace LATEST; a newer one does
    c.events.ingest([ev(5, minutes=0.3, data={"tokens": 50})])
    assert rollup(c, ids["LATEST"])[0][7:] == (latest_t, Decimal(-1))
    c.events.ingest([ev(6, minutes=0.95, data={"tokens": 60})])
    row = rollup(c, ids["LATEST"])[0]
    assert row[3:] == (
        5,
        Decimal("118.5"),
        Decimal(-1),
        Decimal(60),
        to_micros(T0 + timedelta(minutes=0.95)),
        Decimal(60),
    )


def test_minutes_subjects_groups_and_late_events(c: Container) -> None:
    mid = sum_meter(c, "tokens", groupBy={"model": "$.model"})
    c.events.ingest(
        [
            ev(1, minutes=0, subject="a", data={"tokens": 1, "model": "x"}),
            ev(2, minutes=1, subject="a", data={"tokens": 2, "model": "x"}),
            ev(3, minutes=1.5, subject="b", data={"tokens": 3}),
            ev(
                4, minutes=-60 * 24 * 400, subject="a", data={"tokens": 4, "model": "x"}
            ),  # very late
        ]
    )
    m0 = to_micros(T0)
    old = to_micros(T0 - timedelta(days=400))
    assert [(r[0], r[1], r[2], r[4]) for r in rollup(c, mid)] == [
        ("a", old, '{"model":"x"}', Decimal(4)),
        ("a", m0, '{"model":"x"}', Decimal(1)),
        ("a", m0 + 60_000_000, '{"model":"x"}', Decimal(2)),
        ("b", m0 + 60_000_000, '{"model":""}', Decimal(3)),
    ]


def test_exact_decimals_survive_storage(c: Container) -> None:
    mid = sum_meter(c, "tokens")
    c.events.ingest([ev(i, data={"tokens": "0.1"}) for i in range(10)])
    c.events.ingest([ev("big", data={"tokens": "1234567890123456789.000000001"})])
    assert totals(c, mid) == (11, Decimal("1234567890123456790.000000001"))


def test_event_from_excludes_older_events(c: Container) -> None:
    mid = sum_meter(c, "tokens", eventFrom=(T0 + timedelta(minutes=5)).isoformat())
    c.events.ingest([ev(1, minutes=4.99), ev(2, minutes=5), ev(3, minutes=6)])
    assert totals(c, mid) == (2, Decimal(2))


def test_concurrent_retries_from_two_processes_count_once(make_container: MakeContainer) -> None:
    first = make_container()
    second = make_container()
    mid = sum_meter(first, "tokens")
    batches = [[ev(i) for i in range(start, start + 200)] for start in range(0, 1000, 100)]
    errors: list[BaseException] = []

    def run(c: Container, order: list[list[CloudEvent]]) -> None:
        try:
            for batch in order:
                for attempt in range(5):  # a client retries a 503 (safe: exactly once)
                    try:
                        c.events.ingest(batch)
                        break
                    except Unavailable:
                        if attempt == 4:
                            raise
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(first, batches)),
        threading.Thread(target=run, args=(second, list(reversed(batches)))),
        threading.Thread(target=run, args=(first, batches[::2])),
        threading.Thread(target=run, args=(second, batches[1::2])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stored_count(first) == 1100
    assert totals(first, mid) == (1100, Decimal(1100))


def test_meter_create_backfills_from_stored_events(c: Container) -> None:
    c.events.ingest(
        [ev(i, minutes=i, data={"tokens": i, "model": "m" + str(i % 2)}) for i in range(10)]
    )
    c.events.ingest([ev("other", type="not_prompt")])
    mid = sum_meter(c, "tokens", groupBy={"model": "$.model"})
    assert totals(c, mid) == (10, Decimal(45))
    assert {r[2] for r in rollup(c, mid)} == {'{"model":"m0"}', '{"model":"m1"}'}


def test_group_by_change_rebuilds_and_delete_removes_rollups(c: Container) -> None:
    c.events.ingest([ev(i, data={"tokens": 1, "model": "m" + str(i % 3)}) for i in range(9)])
    mid = sum_meter(c, "tokens")
    assert {r[2] for r in rollup(c, mid)} == {"{}"}
    c.meters.update("tokens", {"groupBy": {"model": "$.model"}})
    assert sorted((r[2], r[3]) for r in rollup(c, mid)) == [
        ('{"model":"m0"}', 3),
        ('{"model":"m1"}', 3),
        ('{"model":"m2"}', 3),
    ]
    c.meters.update(mid, {"name": "Tokens", "groupBy": {"model": "$.model"}})  # no rebuild needed
    assert totals(c, mid) == (9, Decimal(9))
    c.meters.delete("tokens")
    assert rollup(c, mid) == []
    with pytest.raises(NotFound):
        c.meters.get("tokens")
    # the slug is free again; events ingested after the delete are not counted for the old id
    c.events.ingest([ev(100)])
    assert rollup(c, mid) == []
    again = sum_meter(c, "tokens")
    assert again != mid
    assert totals(c, again) == (10, Decimal(10))


def test_meter_crud_errors(c: Container) -> None:
    sum_meter(c, "tokens")
    with pytest.raises(Conflict):
        sum_meter(c, "tokens")
    with pytest.raises(InvalidInput) as info:
        c.meters.update("tokens", {"aggregation": "MAX"})
    assert info.value.field == "aggregation"
    with pytest.raises(InvalidInput) as info:
        c.meters.update("tokens", {"eventType": "other"})
    assert info.value.field == "eventType"
    assert c.meters.update("tokens", {"aggregation": "SUM", "eventType": "prompt"}).name == "tokens"
    with pytest.raises(NotFound):
        c.meters.update("nope", {})
    with pytest.raises(NotFound):
        c.meters.delete("nope")


CONFIG = (
    {"slug": "requests", "eventType": "request", "aggregation": "COUNT"},
    {
        "slug": "tokens_cfg",
        "eventType": "prompt",
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
    },
)


def test_config_sync_creates_backfills_is_idempotent_and_protects(
    make_container: MakeContainer,
) -> None:
    plain = make_container()
    plain.events.ingest([ev(1, data={"tokens": 5}), ev(2, type="request")])
    c1 = make_container(CONFIG)
    tokens = c1.meters.get("tokens_cfg")
    assert tokens.managed_by == "config"
    assert totals(c1, tokens.id) == (1, Decimal(5))
    assert totals(c1, c1.meters.get("requests").id) == (1, Decimal(0))
    c2 = make_container(CONFIG)  # a second process starting with the same config
    assert c2.meters.get("tokens_cfg") == tokens
    assert [m.slug for m in c2.meters.list()] == ["requests", "tokens_cfg"]
    assert [m.slug for m in c2.meters.by_event_type("prompt")] == ["tokens_cfg"]
    with pytest.raises(Conflict):
        c2.meters.update("tokens_cfg", {"name": "x"})
    with pytest.raises(Conflict):
        c2.meters.delete("tokens_cfg")
    # a changed definition rebuilds; a meter dropped from the config is released to the API
    changed = ({**CONFIG[1], "groupBy": {"model": "$.model"}},)
    c3 = make_container(changed)
    again = c3.meters.get("tokens_cfg")
    assert again.id == tokens.id
    assert again.group_by == {"model": "$.model"}
    assert [r[2] for r in rollup(c3, again.id)] == ['{"model":""}']
    released = c3.meters.get("requests")
    assert released.managed_by == "api"
    c3.meters.delete("requests")


# ---------------------------------------------------------------- listing


def test_event_listing_filters_and_validation_errors(c: Container) -> None:
    sum_meter(c, "tokens")
    c.events.ingest(
        [
            ev("alpha-1", minutes=1, data={"tokens": 1}),
            ev("alpha-2", minutes=2, data={"tokens": "NaN"}, subject="other"),
            ev("beta-3", minutes=3, data={"x": 1}),
            ev("gamma", minutes=4, type="unmetered"),
            ev("Alpha-5", minutes=5, data={"tokens": 2}),
        ]
    )
    listed = c.events.list(EventQuery(from_=T0))
    assert [e["event"]["id"] for e in listed] == [
        "Alpha-5",
        "gamma",
        "beta-3",
        "alpha-2",
        "alpha-1",
    ]
    errors = {e["event"]["id"]: e.get("validationError") for e in listed}
    assert errors == {
        "Alpha-5": None,
        "gamma": "no meter found for event type: unmetered",
        "beta-3": 'invalid event: missing value property: "$.tokens"',
        "alpha-2": "invalid event: value cannot be NaN",
        "alpha-1": None,
    }
    assert listed[0]["ingestedAt"] == listed[0]["storedAt"] == "2025-06-01T12:00:00Z"
    ids = lambda q: [e["event"]["id"] for e in c.events.list(q)]  # noqa: E731
    assert ids(EventQuery(from_=T0, id="alpha")) == ["alpha-2", "alpha-1"]  # case-sensitive
    assert ids(EventQuery(from_=T0, subject="other")) == ["alpha-2"]
    assert ids(EventQuery(from_=T0, to=T0 + timedelta(minutes=3))) == ["alpha-2", "alpha-1"]
    assert ids(EventQuery(from_=T0 + timedelta(minutes=3))) == ["Alpha-5", "gamma", "beta-3"]
    assert ids(EventQuery(from_=T0, limit=2)) == ["Alpha-5", "gamma"]
    assert ids(EventQuery(from_=T0, has_error=True)) == ["gamma", "beta-3", "alpha-2"]
    assert ids(EventQuery(from_=T0, has_error=False, limit=1)) == ["Alpha-5"]
    assert ids(EventQuery(from_=T0, ingested_at_from=NOW, ingested_at_to=NOW)) != []
    assert ids(EventQuery(from_=T0, ingested_at_from=NOW + timedelta(seconds=1))) == []


def test_event_listing_window_rules(c: Container) -> None:
    c.events.ingest([ev(1, minutes=0)])
    assert c.events.list(EventQuery()) != []  # default window: the last 32 days
    assert c.events.list(EventQuery(from_=NOW - timedelta(days=32))) != []
    with pytest.raises(InvalidInput) as info:
        c.events.list(EventQuery(from_=NOW - timedelta(days=32, microseconds=1)))
    assert info.value.field == "from"
    with pytest.raises(InvalidInput) as info:
        c.events.list(EventQuery(from_=T0, to=T0 - timedelta(microseconds=1)))
    assert info.value.field == "to"
    assert c.events.list(EventQuery(from_=T0, to=T0)) == []
