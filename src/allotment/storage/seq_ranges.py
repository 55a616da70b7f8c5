"""Sets of event ``seq`` values as half-open ranges, and PostgreSQL's ``int8multirange`` text
form of them (``{[1,5),[7,9)}``): what a ``usage_fold_batches`` row holds (migration 0860;
``storage/events_repo.py`` writes them, ``storage/usage_tail.py`` takes them apart).

A set is a list of ``(lo, hi)`` pairs, ``lo < hi``, sorted and disjoint, as PostgreSQL prints
a multirange (adjacent ranges merged). Pure functions, no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

Ranges = list[tuple[int, int]]


def parse(text: str) -> Ranges:
    """The ranges of an ``int8multirange`` as PostgreSQL prints it (canonical ``[lo,hi)``
    bounds: int8 ranges are discrete)."""
    body = text.strip()[1:-1]
    if not body:
        return []
    out: Ranges = []
    for part in body.split("),"):
        lo, _, hi = part.strip("[)").partition(",")
        out.append((int(lo), int(hi)))
    return out


def text(ranges: Sequence[tuple[int, int]]) -> str:
    """The ``int8multirange`` literal of ``ranges``."""
    return "{" + ",".join(f"[{lo},{hi})" for lo, hi in ranges) + "}"


def of_sorted(seqs: Iterable[int]) -> Ranges:
    """The ranges of ascending distinct integers."""
    out: Ranges = []
    for s in seqs:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


def count(ranges: Sequence[tuple[int, int]]) -> int:
    return sum(hi - lo for lo, hi in ranges)


def values(ranges: Sequence[tuple[int, int]]) -> Iterator[int]:
    for lo, hi in ranges:
        yield from range(lo, hi)


def split(
    ranges: Sequence[tuple[int, int]], most: int, below: int | None = None
) -> tuple[Ranges, Ranges]:
    """``(head, rest)``: the smallest values of ``ranges``, at most ``most`` of them and only
    those ``< below`` when given, and the others."""
    head: Ranges = []
    rest: Ranges = []
    left = most
    for lo, hi in ranges:
        if rest or left <= 0 or (below is not None and lo >= below):
            rest.append((lo, hi))
            continue
        cut = min(hi, lo + left)
        if below is not None:
            cut = min(cut, below)
        head.append((lo, cut))
        left -= cut - lo
        if cut < hi:
            rest.append((cut, hi))
    return head, rest
