"""The subjects with the largest usage, ranked by the database (``storage/subject_ranking.py``)
on SQLite and PostgreSQL: the same first subjects, totals and count as a naive ranking of the
raw events, or None (SQLite, when a sum is not an integer) — never a wrong answer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.container import Container
from allotment.domain.meters import Aggregation
from tests.storage.test_meter_rollup import _ingest
from tests.storage.test_query_totals import H0, NOW, SPAN_S, _meter
from tests.support import frozen_container

_example = itertools.count()
INTEGERS = st.integers(-50, 2000).map(Decimal)
VALUES = st.one_of(INTEGERS, st.sampled_from([Decimal("0.5"), Decimal(2**60)]))


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


def _naive(
    raw: list[tuple[int, Decimal, str | None, str]],
    aggregation: Aggregation,
    lo_s: int,
    hi_s: int,
    limit: int,
) -> tuple[list[tuple[str, Decimal]], int]:
    totals: dict[str, Decimal] = {}
    for ms, value, _model, subject in raw:
        if lo_s * 1000 <= ms < hi_s * 1000:
            add = Decimal(1) if aggregation is Aggregation.COUNT else value
            totals[subject] = totals.get(subject, Decimal(0)) + add
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit], len(ranked)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.lists(
        st.tuples(
            st.integers(0, SPAN_S * 1000 - 1),
            VALUES,
            st.sampled_from(["a", None]),
            st.sampled_from([f"s{i}" for i in range(12)] + ["S1", "é", "z"]),
        ),
        min_size=1,
        max_size=60,
    ),
    aggregation=st.sampled_from([Aggregation.SUM, Aggregation.COUNT]),
    minutes=st.tuples(st.integers(-60, SPAN_S // 60 + 60), st.integers(1, SPAN_S // 60)),
    limit=st.integers(1, 8),
)
def test_the_ranking_is_the_naive_one_or_none(
    c: Container,
    raw: list[tuple[int, Decimal, str | None, str]],
    aggregation: Aggregation,
    minutes: tuple[int, int],
    limit: int,
) -> None:
    slug = f"rank{next(_example)}"
    _meter(c, slug, aggregation)
    _ingest(c, slug, list(enumerate(raw)))
    lo_s, hi_s = minutes[0] * 60, (minutes[0] + minutes[1]) * 60
    got = c.meter_queries.top_subjects(
        slug, H0 + timedelta(seconds=lo_s), H0 + timedelta(seconds=hi_s), limit
    )
    if got is None:  # only where SQLite's native sums could not be exact
        assert c.db.dialect == "sqlite"
        assert aggregation is Aggregation.SUM
        assert any(v != int(v) or abs(v) > 2**53 for _, v, _, _ in raw)
        return
    top, count = got
    want_top, want_count = _naive(raw, aggregation, lo_s, hi_s, limit)
    assert [(s, Decimal(t)) for s, t in top] == want_top
    assert count == want_count


def test_integer_sums_rank_on_both_engines_and_a_decimal_is_exact_or_none(c: Container) -> None:
    _meter(c, "ranked", Aggregation.SUM)
    raw = [(i * 60_000, Decimal(i % 7), "a", f"s{i % 5}") for i in range(100)]
    _ingest(c, "ranked", list(enumerate(raw)))
    end = H0 + timedelta(days=1)
    got = c.meter_queries.top_subjects("ranked", H0, end, 3)
    assert got is not None
    assert ([(s, Decimal(t)) for s, t in got[0]], got[1]) == _naive(
        raw, Aggregation.SUM, 0, 86_400, 3
    )
    late = (61 * 60_000, Decimal("0.5"), "a", "s9")
    _ingest(c, "ranked", [(1000, late)])
    got = c.meter_queries.top_subjects("ranked", H0, end, 3)
    if c.db.dialect == "sqlite":
        assert got is None  # a decimal sum: the console takes the plain path
    else:
        assert got is not None
        assert ([(s, Decimal(t)) for s, t in got[0]], got[1]) == _naive(
            [*raw, late], Aggregation.SUM, 0, 86_400, 3
        )


def test_ties_are_ranked_by_subject_in_code_point_order(c: Container) -> None:
    """As the console sorts them in Python (PostgreSQL's collation is not consulted)."""
    _meter(c, "ties", Aggregation.COUNT)
    subjects = ["z", "é", "S1", "s1", "a b", "s10", "s2"]
    raw = [(k * 1000, Decimal(1), None, s) for k, s in enumerate(subjects)]
    raw.append((99_000, Decimal(1), None, "s2"))
    _ingest(c, "ties", list(enumerate(raw)))
    got = c.meter_queries.top_subjects("ties", H0, H0 + timedelta(hours=1), 5)
    assert got == ([("s2", 2), ("S1", 1), ("a b", 1), ("s1", 1), ("s10", 1)], 7)
