"""storage/seq_ranges.py: the int8multirange text form of a fold-queue row, and the split a
fold makes when it takes only part of one (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from allotment.storage import seq_ranges


def test_parse_and_text_round_trip_postgresql_s_form() -> None:
    assert seq_ranges.parse("{}") == []
    assert seq_ranges.parse("{[1,5)}") == [(1, 5)]
    assert seq_ranges.parse("{[1,5),[7,9),[20,21)}") == [(1, 5), (7, 9), (20, 21)]
    assert seq_ranges.text([(1, 5), (7, 9)]) == "{[1,5),[7,9)}"
    assert seq_ranges.of_sorted([3, 4, 5, 9, 11, 12]) == [(3, 6), (9, 10), (11, 13)]
    assert seq_ranges.count([(3, 6), (9, 10)]) == 4
    assert list(seq_ranges.values([(3, 6), (9, 10)])) == [3, 4, 5, 9]


def test_split_takes_the_smallest_values_up_to_the_count_and_the_bound() -> None:
    r = [(1, 5), (7, 9)]
    assert seq_ranges.split(r, 10) == ([(1, 5), (7, 9)], [])
    assert seq_ranges.split(r, 4) == ([(1, 5)], [(7, 9)])
    assert seq_ranges.split(r, 5) == ([(1, 5), (7, 8)], [(8, 9)])
    assert seq_ranges.split(r, 2) == ([(1, 3)], [(3, 5), (7, 9)])
    assert seq_ranges.split(r, 0) == ([], [(1, 5), (7, 9)])
    assert seq_ranges.split(r, 10, below=8) == ([(1, 5), (7, 8)], [(8, 9)])
    assert seq_ranges.split(r, 10, below=6) == ([(1, 5)], [(7, 9)])
    assert seq_ranges.split(r, 10, below=1) == ([], [(1, 5), (7, 9)])


@given(
    st.sets(st.integers(0, 200), min_size=1),
    st.integers(0, 250),
    st.none() | st.integers(0, 250),
)
def test_split_partitions_the_set(values: set[int], most: int, below: int | None) -> None:
    ranges = seq_ranges.of_sorted(sorted(values))
    assert seq_ranges.parse(seq_ranges.text(ranges)) == ranges
    head, rest = seq_ranges.split(ranges, most, below)
    taken = list(seq_ranges.values(head))
    left = list(seq_ranges.values(rest))
    assert sorted(taken + left) == sorted(values)
    expected = sorted(v for v in values if below is None or v < below)[:most]
    assert taken == expected
