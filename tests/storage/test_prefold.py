"""Rollups folded on the request's thread (``EventService.prefold``) and merged by the writer
equal the rollups rebuilt from the stored raw events, on SQLite and PostgreSQL: every grain,
every column, UNIQUE_COUNT values and LATEST ties included; and the writer falls back to its own
fold whenever a prefold is no longer exact (some events already stored, a repeat inside the
group, the meters changed in between)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.container import Container
from allotment.domain.events import PreparedEvent, validate_event
from allotment.services import events as events_service
from allotment.services.events import PREFOLD_MIN_EVENTS, PrefoldedBatch, prepare
from allotment.storage import meters_repo, usage_write
from tests.support import fold_tail, frozen_container

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2025, 5, 31, 23, 58, tzinfo=UTC)  # spans a day boundary


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


METERS = [
    {
        "slug": "tokens",
        "aggregation": "SUM",
        "eventType": "prompt",
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model"},
    },
    {"slug": "last", "aggregation": "LATEST", "eventType": "prompt", "valueProperty": "$.tokens"},
    {"slug": "users", "aggregation": "UNIQUE_COUNT", "eventType": "prompt", "valueProperty": "$.u"},
    {"slug": "calls", "aggregation": "COUNT", "eventType": "prompt"},
    {"slug": "peak", "aggregation": "MAX", "eventType": "prompt", "valueProperty": "$.tokens"},
    {
        "slug": "late",
        "aggregation": "SUM",
        "eventType": "prompt",
        "valueProperty": "$.tokens",
        "eventFrom": (T0 + timedelta(minutes=2)).isoformat(),
    },
]


def ev(rng: random.Random, key: int, source: str = "app") -> PreparedEvent:
    raw = {
        "specversion": "1.0",
        "id": f"e{key}",
        "source": source,
        "type": "prompt",
        "subject": rng.choice(["a", "b"]),
        # a few distinct times only, so LATEST ties across requests are common
        "time": (T0 + timedelta(seconds=30 * rng.randrange(8))).isoformat(),
        "data": {
            "tokens": rng.choice([1, 2, "0.1", "0.2", 7, "1e3", "-3.5"]),
            "model": rng.choice(["m1", "m2"]),
            "u": rng.choice(["x", "y", "z"]),
        },
    }
    return prepare(validate_event(raw, "event", NOW))


def snapshot(c: Container) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    fold_tail(c.db)
    with c.db.read() as tx:
        for grain in usage_write.GRAINS:
            rows = tx.execute(
                f"SELECT meter_id, subject, {grain.column}, group_key, count, sum, min, max, "
                f"latest_time, latest_value, isum FROM {grain.table}"
            )
            table = []
            for r in rows:
                row = tuple(
                    Decimal(str(v)) if i in (5, 6, 7, 9) and v is not None else v
                    for i, v in enumerate(r)
                )
                # isum is only a shortcut: NULL (read the exact sum) or the sum itself
                assert row[10] is None or row[10] == row[5]
                table.append(row[:10])
            out[grain.table] = sorted(table)
        out["usage_unique"] = sorted(tuple(r) for r in tx.execute("SELECT * FROM usage_unique"))
    return out


def rebuilt(c: Container) -> dict[str, list[tuple[Any, ...]]]:
    """The rollups recomputed from the stored events (the plain computation)."""
    with c.db.write() as tx:
        for meter in meters_repo.live_by_event_types(tx, ["prompt"]):
            usage_write.backfill(tx, meter.id, meter)
    return snapshot(c)


@pytest.fixture
def writer_folds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events the writer folded itself (not from a prefold), per write."""
    calls: list[int] = []
    real = usage_write.fold_events

    def counting(by_type: Any, events: Any) -> usage_write.Folded:
        rows = list(events)
        calls.append(len(rows))
        return real(by_type, rows)

    monkeypatch.setattr(events_service.usage_write, "fold_events", counting)
    return calls


def test_prefolded_groups_equal_the_plain_rebuild(c: Container, writer_folds: list[int]) -> None:
    for m in METERS:
        c.meters.create(m)
    rng = random.Random(11)
    key = 0
    for _ in range(6):
        batches: list[Any] = []
        for _ in range(rng.randrange(1, 4)):
            size = rng.randrange(PREFOLD_MIN_EVENTS, PREFOLD_MIN_EVENTS + 40)
            batch = [ev(rng, key + i) for i in range(size)]
            key += size
            batches.append(c.events.prefold(batch))
        writer_folds.clear()
        counts = c.events.write_batches(batches)
        assert counts == [len(b) for b in batches]
        if not c.events.deferred:  # SQLite folds later, from the stored rows, never prefolds
            assert writer_folds == []  # every batch was written from its prefold
    _same(snapshot(c), rebuilt(c))


def test_writer_refolds_what_a_prefold_got_wrong(c: Container, writer_folds: list[int]) -> None:
    if c.events.deferred:
        pytest.skip("SQLite folds later, from the stored rows (test_deferred_fold.py)")
    c.meters.create(METERS[0])
    c.meters.create(METERS[1])
    rng = random.Random(5)
    first = [ev(rng, i) for i in range(40)]
    assert c.events.write_batches([c.events.prefold(first)]) == [40]

    # (1) a batch that repeats 5 stored events: its prefold counted them, the writer must not
    partly_stored = first[:5] + [ev(rng, 100 + i) for i in range(40)]
    # (2) two requests of one group sharing 3 events: the first one wins them
    a = [ev(rng, 200 + i) for i in range(40)]
    b = a[:3] + [ev(rng, 300 + i) for i in range(40)]
    # (3) a repeat inside one request: folded once
    inner = [ev(rng, 400 + i) for i in range(40)]
    inner.append(inner[0])
    folds = [c.events.prefold(x) for x in (partly_stored, a, b, inner)]
    assert all(isinstance(f, PrefoldedBatch) and f.folded is not None for f in folds)
    writer_folds.clear()
    assert c.events.write_batches(folds) == [40, 40, 40, 40]
    assert writer_folds == [80]  # partly_stored (40 new) and b (40 new) refolded
    _same(snapshot(c), rebuilt(c))

    # (4) a meter created between the prefold and the write: the prefold misses it
    late = c.events.prefold([ev(rng, 500 + i) for i in range(40)])
    c.meters.create(METERS[3])
    writer_folds.clear()
    assert c.events.write_batches([late]) == [40]
    assert writer_folds == [40]
    _same(snapshot(c), rebuilt(c))


def test_small_batches_are_left_to_the_writer(c: Container) -> None:
    if c.events.deferred:
        pytest.skip("SQLite folds later, from the stored rows (test_deferred_fold.py)")
    c.meters.create(METERS[0])
    rng = random.Random(1)
    small = [ev(rng, i) for i in range(PREFOLD_MIN_EVENTS - 1)]
    assert c.events.prefold(small) is small
    at_limit = [ev(rng, 100 + i) for i in range(PREFOLD_MIN_EVENTS)]
    assert isinstance(c.events.prefold(at_limit), PrefoldedBatch)


def _same(got: dict[str, list[tuple[Any, ...]]], want: dict[str, list[tuple[Any, ...]]]) -> None:
    for table in want:
        extra = sorted(set(got[table]) - set(want[table]))
        missing = sorted(set(want[table]) - set(got[table]))
        for row in extra:
            print("EXTRA", row)
        for row in missing:
            print("MISSING", row)
        assert (table, len(extra), len(missing)) == (table, 0, 0)
