"""A deliberately naive minute-by-minute reference model of the burn-down engine.

Written from engine-semantics §4–§5 without looking at ``engine.py``: no phases, no
planning. It walks every minute from ``start`` to ``until`` and, at each minute ``m``:

1. if a reset happens at ``m``: grants active at ``m`` roll over to
   ``min(max, max(min, balance))``, grants inactive at ``m`` drop to 0, the usage counters
   restart, and the overage becomes the debt to carry (only when preserving, else forgiven);
2. every grant inactive at ``m`` holds 0; a grant that becomes effective at ``m`` or recurs
   at ``m`` holds its full amount (not at ``start``: the start state already includes it);
3. the debt (overage) plus the usage of ``[m, m+1)`` is burnt from the active grants in burn
   order (priority, expiring first and earlier expiry first, created_at, id); what is left
   is the overage.

SUM-style usage only (not LATEST). Usage is given per minute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from allotment.domain.grants import Grant

MINUTE = timedelta(minutes=1)
ZERO = Decimal(0)


@dataclass
class RefState:
    balances: dict[str, Decimal]
    overage: Decimal
    usage_in_period: Decimal
    total_grant_usage: Decimal


def _order(grants: Sequence[Grant]) -> list[Grant]:
    def key(g: Grant) -> tuple[int, int, float, datetime, str]:
        if g.expires_at is None:
            return (g.priority, 1, 0.0, g.created_at, g.id)
        return (g.priority, 0, g.expires_at.timestamp(), g.created_at, g.id)

    return sorted(grants, key=key)


def _active(g: Grant, at: datetime) -> bool:
    ends = [x for x in (g.expires_at, g.voided_at, g.deleted_at) if x is not None]
    return g.effective_at <= at and all(at < e for e in ends)


def _refill_instants(g: Grant, start: datetime, until: datetime) -> set[datetime]:
    """Naive: every ``anchor + n × interval`` in ``[start, until]``, stepping n one by one."""
    if g.recurrence is None:
        return set()
    rec = g.recurrence
    n = 0
    while rec.boundary(n) > start:
        n -= 1
    instants = set()
    while rec.boundary(n) <= until:
        if rec.boundary(n) >= start:
            instants.add(rec.boundary(n))
        n += 1
    return instants


def reference_run(
    grants: Sequence[Grant],
    start: datetime,
    until: datetime,
    resets: Mapping[datetime, bool],
    usage_per_minute: Mapping[datetime, Decimal],
) -> RefState:
    """Fresh start at ``start``; ``resets`` maps each reset instant to ``preserve_overage``."""
    ordered = _order(grants)
    refills = {g.id: _refill_instants(g, start, until) for g in grants}
    state = RefState(
        balances={g.id: (g.amount if _active(g, start) else ZERO) for g in grants},
        overage=ZERO,
        usage_in_period=ZERO,
        total_grant_usage=ZERO,
    )
    minute = start
    while minute <= until:
        debt = state.overage
        if minute in resets and minute != start:
            for g in ordered:
                b = state.balances[g.id]
                state.balances[g.id] = min(g.max_rollover, max(g.min_rollover, b))
            debt = state.overage if resets[minute] else ZERO
            state.usage_in_period = ZERO
            state.total_grant_usage = ZERO
        for g in ordered:
            if not _active(g, minute):
                state.balances[g.id] = ZERO
            elif minute != start and (g.effective_at == minute or minute in refills[g.id]):
                state.balances[g.id] = g.amount
        used_now = usage_per_minute.get(minute, ZERO) if minute < until else ZERO
        demand = debt + used_now
        for g in ordered:
            take = min(state.balances[g.id], demand)
            state.balances[g.id] -= take
            demand -= take
            state.total_grant_usage += take
        state.overage = demand
        state.usage_in_period += used_now
        minute += MINUTE
    return state
