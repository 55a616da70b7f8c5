"""Pure rules of the value-check cache (``services/value_cache.py``): where to put the engine
checkpoint, how far its open usage reaches, and what a newer usage mark means for it.

Nothing here changes a result: a value resumed from a checkpoint equals one computed from
``measureUsageFrom`` (the engine's resumption property); these rules only decide when the
cache may resume and when it must recompute.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

RING = 8
"""Ring slots per usage mark: a reader at most this many versions behind can tell where the
events it missed lie; further behind, it recomputes its checkpoint."""

LAG = timedelta(minutes=10)
"""The checkpoint stays at least this far behind the read time, so events that arrive a few
minutes late land after it (re-read cheaply) rather than before it (recompute)."""

HORIZON = timedelta(hours=6)
"""How far past its checkpoint a cached usage series reaches; reads beyond it rebuild."""

UNCHANGED = 2**63 - 1
"""``earliest_touched`` when no version was missed."""


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def checkpoint_for(until: datetime, now: datetime, measure_usage_from: datetime) -> datetime | None:
    """Where a new checkpoint goes: the start of the hour ``LAG`` before ``now``, never before
    ``measureUsageFrom``. None when it cannot serve a read at minute-aligned ``until`` (which
    is then answered by the plain computation): before the checkpoint or beyond its horizon.
    The checkpoint depends on ``now`` only, so reads of past times never displace it."""
    checkpoint = max(measure_usage_from, floor_hour(now - LAG))
    if until < checkpoint or until >= checkpoint + HORIZON:
        return None
    return checkpoint


def slot(version: int) -> int:
    return version % RING


def earliest_touched(cached: int, current: int, slots: Sequence[int | None]) -> int | None:
    """The earliest minute (epoch µs) touched by versions ``(cached, current]``: ``UNCHANGED``
    when there are none, None when that is unknown (more than ``RING`` behind, a missing slot,
    or a counter that went backwards)."""
    if current == cached:
        return UNCHANGED
    if current < cached or current - cached > RING:
        return None
    earliest = UNCHANGED
    for version in range(cached + 1, current + 1):
        minute = slots[slot(version)]
        if minute is None:
            return None
        earliest = min(earliest, minute)
    return earliest
