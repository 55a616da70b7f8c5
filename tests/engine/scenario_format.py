"""Loader for the golden scenario files in tests/scenarios/*.yaml (format: README there).

Parsing only: it turns a file into plain dataclasses with absolute UTC times and Decimal
numbers, so both the engine runner (tests/engine/test_scenarios.py) and an HTTP runner can
replay the same steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from allotment.domain.timeutil import parse_rfc3339

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
_OFFSET = re.compile(r"^([+-])((?:\d+[dhms])+)$")
_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
EXPECT_KEYS = ("hasAccess", "balance", "usage", "overage", "totalAvailableGrantAmount")
WINDOW_KEYS = ("from", "to", "usage", "balanceAtStart")
SEGMENT_KEYS = ("from", "to", "usage", "overage", "balanceAtStart", "balanceAtEnd",
                "grantBalancesAtStart", "grantBalancesAtEnd")  # fmt: skip
_TIME_KEYS = ("from", "to")
_GRANT_MAP_KEYS = ("grantBalancesAtStart", "grantBalancesAtEnd")
Row = dict[str, Any]


def parse_time(value: object, base: datetime) -> datetime:
    """``+1d2h30m`` / ``-5m`` relative to ``base``, ``+0``, or an RFC 3339 string."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    text = str(value).strip()
    if text in ("+0", "0"):
        return base
    match = _OFFSET.match(text)
    if match is None:
        return parse_rfc3339(text, "time")
    sign = 1 if match.group(1) == "+" else -1
    delta = timedelta(**{_UNITS[u]: int(n) for n, u in _PART.findall(match.group(2))})
    return base + sign * delta


def _dec(value: object) -> Decimal:
    return Decimal(str(value))


@dataclass(frozen=True)
class ExpectError:
    status: int = 400
    field: str | None = None


@dataclass(frozen=True)
class Step:
    """One API call. ``kind`` is grant | event | void | reset | check | history; ``now`` is
    the server clock for the call (defaults to the step's own time)."""

    kind: str
    now: datetime
    data: dict[str, Any]
    expect_error: ExpectError | None = None


@dataclass(frozen=True)
class EntitlementSpec:
    interval: str
    anchor: datetime
    measure_usage_from: datetime
    is_soft_limit: bool = False
    issue_after_reset: Decimal | None = None
    issue_after_reset_priority: int | None = None
    preserve_overage_at_reset: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    base: datetime
    entitlement: EntitlementSpec
    steps: tuple[Step, ...] = field(default_factory=tuple)


def _grant_data(raw: dict[str, Any], base: datetime) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(raw["id"]), "amount": _dec(raw["amount"])}
    data["effectiveAt"] = parse_time(raw["effectiveAt"], base)
    data["priority"] = raw.get("priority")
    if "expiration" in raw:
        data["expiration"] = {
            "duration": str(raw["expiration"]["duration"]),
            "count": int(raw["expiration"]["count"]),
        }
    for key in ("minRolloverAmount", "maxRolloverAmount"):
        data[key] = _dec(raw[key]) if key in raw else None
    if "recurrence" in raw:
        rec = raw["recurrence"]
        anchor = parse_time(rec["anchor"], base) if "anchor" in rec else None
        data["recurrence"] = {"interval": str(rec["interval"]), "anchor": anchor}
    return data


def _history_rows(rows: list[dict[str, Any]], keys: tuple[str, ...], base: datetime) -> list[Row]:
    out: list[Row] = []
    for row in rows:
        unknown = set(row) - set(keys)
        if unknown:
            raise ValueError(f"unknown history keys {sorted(unknown)} in {row}")
        parsed: Row = {}
        for key, value in row.items():
            if key in _TIME_KEYS:
                parsed[key] = parse_time(value, base)
            elif key in _GRANT_MAP_KEYS:
                parsed[key] = {str(g): _dec(v) for g, v in value.items()}
            else:
                parsed[key] = _dec(value)
        out.append(parsed)
    return out


def _history_data(body: dict[str, Any], base: datetime) -> dict[str, Any]:
    expect = body.get("expect") or {}
    return {
        "from": parse_time(body["from"], base) if "from" in body else None,
        "to": parse_time(body["to"], base) if "to" in body else None,
        "windowSize": str(body["windowSize"]),
        "windowTimeZone": body.get("windowTimeZone"),
        "windows": _history_rows(expect["windows"], WINDOW_KEYS, base)
        if "windows" in expect else None,
        "segments": _history_rows(expect["segments"], SEGMENT_KEYS, base)
        if "segments" in expect else None,
    }  # fmt: skip


def compare_history(
    where: str, want: dict[str, Any], windows: list[Row], segments: list[Row]
) -> None:
    """Compare a history answer, normalised to ``Row``s (UTC datetimes, Decimals, grant names),
    with a history step's expectation: same number of rows, and every key the file lists."""
    for name, got in (("windows", windows), ("segments", segments)):
        rows = want[name]
        if rows is None:
            continue
        assert len(got) == len(rows), f"{where}: {len(got)} {name}, want {len(rows)}: {got}"
        for i, (g, w) in enumerate(zip(got, rows, strict=True)):
            for key, value in w.items():
                assert g[key] == value, f"{where}: {name}[{i}].{key} = {g[key]}, want {value}"


def _step(raw: dict[str, Any], base: datetime) -> Step:
    kinds = [k for k in ("grant", "event", "void", "reset", "check", "history") if k in raw]
    if len(kinds) != 1:
        raise ValueError(f"a step needs exactly one of grant/event/void/reset/check/history: {raw}")
    kind = kinds[0]
    body = raw[kind] or {}
    if kind == "grant":
        data = _grant_data(body, base)
        own = data["effectiveAt"]
    elif kind == "event":
        data = {"time": parse_time(body["time"], base), "value": _dec(body["value"])}
        own = data["time"]
    elif kind == "void":
        at = parse_time(body["at"], base) if "at" in body else None
        data = {"grant": str(body["grant"]), "at": at}
        own = at
    elif kind == "reset":
        at = parse_time(body["at"], base) if "at" in body else None
        data = {
            "at": at,
            "retainAnchor": bool(body.get("retainAnchor", False)),
            "preserveOverage": body.get("preserveOverage"),
        }
        own = at
    elif kind == "history":
        data = _history_data(body, base)
        own = data["to"]
    else:
        expect = {k: body["expect"][k] for k in EXPECT_KEYS if k in body["expect"]}
        data = {"at": parse_time(body["at"], base), "expect": expect}
        own = data["at"]
    now = parse_time(raw["now"], base) if "now" in raw else own
    if now is None:
        raise ValueError(f"step needs a time or a now: {raw}")
    error = raw.get("expectError")
    expect_error = ExpectError(int(error.get("status", 400)), error.get("field")) if error else None
    return Step(kind, now, data, expect_error)


def load_scenario(path: Path) -> Scenario:
    raw = yaml.safe_load(path.read_text())
    base = parse_rfc3339(str(raw.get("base", "2024-01-01T00:00:00Z")), "base")
    ent = raw["entitlement"]
    period = ent["usagePeriod"]
    spec = EntitlementSpec(
        interval=str(period["interval"]),
        anchor=parse_time(period.get("anchor", "+0"), base),
        measure_usage_from=parse_time(ent.get("measureUsageFrom", "+0"), base),
        is_soft_limit=bool(ent.get("isSoftLimit", False)),
        issue_after_reset=_dec(ent["issueAfterReset"]) if "issueAfterReset" in ent else None,
        issue_after_reset_priority=ent.get("issueAfterResetPriority"),
        preserve_overage_at_reset=bool(ent.get("preserveOverageAtReset", False)),
    )
    steps = tuple(_step(s, base) for s in raw["steps"])
    return Scenario(str(raw["name"]), path, base, spec, steps)


def all_scenarios() -> list[Scenario]:
    return [load_scenario(p) for p in sorted(SCENARIO_DIR.glob("*.yaml"))]
