"""Replays every golden scenario (tests/scenarios/*.yaml) against the pure domain."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from allotment.domain.entitlement_math import (
    ManualReset,
    MeteredSpec,
    WindowSize,
    default_grant_params,
    history,
    last_reset,
    make_usage_period,
    metered_value,
    validate_grant_effective_at,
    validate_issue_after_reset,
    validate_reset,
    validate_void,
)
from allotment.domain.errors import DomainError, InvalidInput
from allotment.domain.grants import (
    Grant,
    validate_amount,
    validate_expiration_count,
    validate_grant_count,
    validate_priority,
    validate_rollover,
)
from allotment.domain.periods import (
    ExpirationUnit,
    Recurrence,
    expiration_expires_at,
    parse_interval,
)
from allotment.domain.timeutil import ceil_minute, floor_minute

from .scenario_format import Row, Scenario, Step, all_scenarios, compare_history

SCENARIOS = all_scenarios()


@dataclass
class World:
    spec: MeteredSpec
    grants: dict[str, Grant] = field(default_factory=dict)
    events: list[tuple[datetime, Decimal]] = field(default_factory=list)
    resets: list[ManualReset] = field(default_factory=list)

    def usage_fn(self, _period_start: datetime, from_: datetime, to: datetime) -> Decimal:
        return sum((v for at, v in self.events if from_ <= at < to), Decimal(0))


def _create_entitlement(sc: Scenario) -> World:
    ent = sc.entitlement
    validate_issue_after_reset(ent.issue_after_reset, ent.issue_after_reset_priority)
    spec = MeteredSpec(
        usage_period=make_usage_period(ent.interval, ent.anchor, ent.measure_usage_from),
        measure_usage_from=floor_minute(ent.measure_usage_from),
        is_soft_limit=ent.is_soft_limit,
        preserve_overage_at_reset=ent.preserve_overage_at_reset,
        issue_after_reset=ent.issue_after_reset,
        issue_after_reset_priority=ent.issue_after_reset_priority or 1,
    )
    world = World(spec)
    params = default_grant_params(spec)
    if params is not None:
        world.grants["default"] = Grant(
            id="default", amount=params.amount, priority=params.priority,
            effective_at=params.effective_at, expires_at=None, created_at=spec.measure_usage_from,
            min_rollover=params.min_rollover, max_rollover=params.max_rollover,
        )  # fmt: skip
    return world


def _create_grant(world: World, step: Step, index: int) -> None:
    d: dict[str, Any] = step.data
    validate_grant_count(len(world.grants))
    amount = validate_amount(d["amount"])
    priority = validate_priority(d["priority"])
    low, high = validate_rollover(d["minRolloverAmount"], d["maxRolloverAmount"])
    effective = validate_grant_effective_at(world.spec, world.resets, d["effectiveAt"], step.now)
    expires = None
    if "expiration" in d:
        count = validate_expiration_count(d["expiration"]["count"])
        unit = ExpirationUnit(d["expiration"]["duration"])
        expires = expiration_expires_at(effective, unit, count)
    recurrence = None
    if "recurrence" in d:
        interval = parse_interval(d["recurrence"]["interval"], field="recurrence.interval")
        recurrence = Recurrence(interval, d["recurrence"]["anchor"] or effective)
    world.grants[d["id"]] = Grant(
        id=d["id"], amount=amount, priority=priority, effective_at=effective, expires_at=expires,
        created_at=step.now + timedelta(microseconds=index), min_rollover=low,
        max_rollover=high, recurrence=recurrence,
    )  # fmt: skip


def _check(world: World, step: Step, sc: Scenario) -> None:
    grants = list(world.grants.values())
    value = metered_value(world.spec, grants, world.resets, step.data["at"], world.usage_fn)
    got = {
        "hasAccess": value.has_access,
        "balance": value.balance,
        "usage": value.usage,
        "overage": value.overage,
        "totalAvailableGrantAmount": value.total_available_grant_amount,
    }
    for key, want in step.data["expect"].items():
        expected = want if isinstance(want, bool) else Decimal(str(want))
        assert got[key] == expected, f"{sc.path.name} check at {step.data['at']}: {key}"


def _history(world: World, step: Step, sc: Scenario) -> None:
    d = step.data
    grants = list(world.grants.values())
    start = d["from"] or last_reset(world.spec, world.resets)
    end = d["to"] or step.now
    end_at = ceil_minute(end)

    def window_usage(a: datetime, b: datetime) -> Decimal:  # the service clips at `to`
        return world.usage_fn(a, a, min(b, end_at))

    got = history(
        world.spec, grants, world.resets, start, end, WindowSize(d["windowSize"]),
        ZoneInfo(d["windowTimeZone"] or "UTC"), world.usage_fn, window_usage,
    )  # fmt: skip
    windows: list[Row] = [
        {"from": w.from_.astimezone(UTC), "to": w.to.astimezone(UTC), "usage": w.usage,
         "balanceAtStart": w.balance_at_start}
        for w in got.windowed
    ]  # fmt: skip
    segments: list[Row] = [
        {"from": b.from_, "to": b.to, "usage": b.usage, "overage": b.overage,
         "balanceAtStart": b.balance_at_start, "balanceAtEnd": b.balance_at_end,
         "grantBalancesAtStart": dict(b.grant_balances_at_start),
         "grantBalancesAtEnd": dict(b.grant_balances_at_end)}
        for b in got.burndown
    ]  # fmt: skip
    compare_history(f"{sc.path.name} history to {end}", d, windows, segments)


def _apply(world: World, step: Step, index: int, sc: Scenario) -> None:
    d = step.data
    if step.kind == "grant":
        _create_grant(world, step, index)
    elif step.kind == "event":
        world.events.append((d["time"], d["value"]))
    elif step.kind == "void":
        grant = world.grants[d["grant"]]
        at = validate_void(grant, d["at"], step.now, world.spec, world.resets)
        world.grants[d["grant"]] = replace(grant, voided_at=at)
    elif step.kind == "reset":
        reset = validate_reset(
            world.spec, world.resets, step.now, d["at"], d["retainAnchor"], d["preserveOverage"]
        )
        world.resets.append(reset)
    elif step.kind == "history":
        _history(world, step, sc)
    else:
        _check(world, step, sc)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.path.stem for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    world = _create_entitlement(sc)
    for index, step in enumerate(sc.steps):
        if step.expect_error is None:
            _apply(world, step, index, sc)
            continue
        with pytest.raises(DomainError) as info:
            _apply(world, step, index, sc)
        assert step.expect_error.status == 400
        assert isinstance(info.value, InvalidInput)
        if step.expect_error.field is not None:
            assert info.value.field == step.expect_error.field


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 20
