"""Every golden scenario (tests/scenarios/*.yaml) replayed through the HTTP API of a real
server on the settable test clock, on each backend (format and mapping: the README there).

Each scenario gets its own meter, feature and subject, so all share one server per backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.domain.timeutil import format_rfc3339, parse_rfc3339
from tests.api.test_features import create_feature, create_meter, ingest, set_clock
from tests.engine.scenario_format import Row, Scenario, Step, all_scenarios, compare_history
from tests.support import ServerProcess, unique

SCENARIOS = all_scenarios()


@pytest.fixture(scope="module")
def scenario_server(new_db_url: Callable[[], str]) -> Iterator[ServerProcess]:
    proc = ServerProcess(new_db_url(), env={"ALLOTMENT_TEST_CLOCK": "2024-01-01T00:00:00Z"})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _t(at: datetime) -> str:
    return format_rfc3339(at)


def _num(value: Decimal) -> Any:
    return int(value) if value == value.to_integral_value() else str(value)


def _decoded(r: httpx.Response) -> Any:
    return json.loads(r.text, parse_float=Decimal)


class Runner:
    def __init__(self, c: httpx.Client, sc: Scenario) -> None:
        self.c = c
        self.sc = sc
        self.subject = unique("subj-")
        self.meter = create_meter(c, "SUM")
        self.feature = create_feature(c, self.meter["slug"])
        self.grants: dict[str, str] = {}
        self.entitlement_id = ""

    @property
    def base(self) -> str:
        return f"/api/v1/subjects/{self.subject}/entitlements/{self.entitlement_id}"

    def create_entitlement(self) -> None:
        spec = self.sc.entitlement
        set_clock(self.c, _t(spec.measure_usage_from))
        body: dict[str, Any] = {
            "type": "metered",
            "featureKey": self.feature["key"],
            "usagePeriod": {"interval": spec.interval, "anchor": _t(spec.anchor)},
            "measureUsageFrom": _t(spec.measure_usage_from),
            "isSoftLimit": spec.is_soft_limit,
            "preserveOverageAtReset": spec.preserve_overage_at_reset,
        }
        if spec.issue_after_reset is not None:
            body["issueAfterReset"] = _num(spec.issue_after_reset)
        if spec.issue_after_reset_priority is not None:
            body["issueAfterResetPriority"] = spec.issue_after_reset_priority
        r = self.c.post(f"/api/v1/subjects/{self.subject}/entitlements", json=body)
        assert r.status_code == 201, r.text
        self.entitlement_id = r.json()["id"]
        for g in self.c.get(self.base + "/grants").json():
            if (g.get("annotations") or {}).get("issueAfterReset"):
                self.grants["default"] = g["id"]

    def request(self, step: Step) -> httpx.Response:
        d = step.data
        if step.kind == "grant":
            body: dict[str, Any] = {
                "amount": _num(d["amount"]),
                "effectiveAt": _t(d["effectiveAt"]),
            }
            if d.get("priority") is not None:
                body["priority"] = d["priority"]
            for key in ("expiration", "minRolloverAmount", "maxRolloverAmount"):
                if d.get(key) is not None:
                    body[key] = _num(d[key]) if isinstance(d[key], Decimal) else d[key]
            if d.get("recurrence") is not None:
                rec = {"interval": d["recurrence"]["interval"]}
                if d["recurrence"]["anchor"] is not None:
                    rec["anchor"] = _t(d["recurrence"]["anchor"])
                body["recurrence"] = rec
            return self.c.post(self.base + "/grants", json=body)
        if step.kind == "void":
            params = {"at": _t(d["at"])} if d["at"] is not None else {}
            return self.c.delete(f"/api/v1/grants/{self.grants[d['grant']]}", params=params)
        if step.kind == "reset":
            body = {"retainAnchor": d["retainAnchor"]}
            if d["at"] is not None:
                body["effectiveAt"] = _t(d["at"])
            if d["preserveOverage"] is not None:
                body["preserveOverage"] = d["preserveOverage"]
            return self.c.post(self.base + "/reset", json=body)
        if step.kind == "check":
            return self.c.get(self.base + "/value", params={"time": _t(d["at"])})
        if step.kind == "history":
            params = {"windowSize": d["windowSize"]}
            for key in ("from", "to"):
                if d[key] is not None:
                    params[key] = _t(d[key])
            if d["windowTimeZone"] is not None:
                params["windowTimeZone"] = d["windowTimeZone"]
            return self.c.get(self.base + "/history", params=params)
        raise AssertionError(step.kind)

    def compare_history(self, where: str, step: Step, body: dict[str, Any]) -> None:
        names = {real: name for name, real in self.grants.items()}

        def grants(balances: dict[str, Any]) -> dict[str, Decimal]:
            return {names[g]: Decimal(str(v)) for g, v in balances.items()}

        def period(item: dict[str, Any]) -> Row:
            p = item["period"]
            return {"from": parse_rfc3339(p["from"], "from"), "to": parse_rfc3339(p["to"], "to")}

        windows: list[Row] = [
            {**period(w), "usage": Decimal(str(w["usage"])),
             "balanceAtStart": Decimal(str(w["balanceAtStart"]))}
            for w in body["windowedHistory"]
        ]  # fmt: skip
        segments: list[Row] = [
            {**period(b), **{k: Decimal(str(b[k])) for k in
                             ("usage", "overage", "balanceAtStart", "balanceAtEnd")},
             "grantBalancesAtStart": grants(b["grantBalancesAtStart"]),
             "grantBalancesAtEnd": grants(b["grantBalancesAtEnd"])}
            for b in body["burndownHistory"]
        ]  # fmt: skip
        compare_history(where, step.data, windows, segments)

    def state(self) -> tuple[Any, Any]:
        """What an error must not change: grants and the entitlement (lastReset etc.)."""
        grants = self.c.get(self.base + "/grants", params={"includeDeleted": "true"}).json()
        return grants, self.c.get(self.base).json()

    def run_step(self, i: int, step: Step) -> None:
        where = f"{self.sc.path.name} step {i + 1} ({step.kind})"
        set_clock(self.c, _t(step.now))
        if step.kind == "event":
            data = {"value": _num(step.data["value"])}
            event = {"type": self.meter["eventType"], "subject": self.subject,
                     "time": _t(step.data["time"]), "data": data}  # fmt: skip
            ingest(self.c, [event])
            return
        before = self.state() if step.expect_error else None
        r = self.request(step)
        if step.expect_error is not None:
            err = step.expect_error
            assert r.status_code == err.status, f"{where}: {r.status_code} {r.text}"
            assert r.headers["content-type"] == "application/problem+json"
            if err.field:
                assert err.field in r.json().get("detail", ""), f"{where}: {r.text}"
            assert self.state() == before, f"{where}: a rejected call changed state"
            return
        assert r.status_code < 300, f"{where}: {r.status_code} {r.text}"
        if step.kind == "grant":
            self.grants[step.data["id"]] = r.json()["id"]
        if step.kind == "history":
            self.compare_history(where, step, _decoded(r))
        if step.kind == "check":
            got = _decoded(r)
            for key, want in step.data["expect"].items():
                expected = want if isinstance(want, bool) else Decimal(str(want))
                assert key in got, f"{where}: {key} missing from {got}"
                assert got[key] == expected, f"{where}: {key} = {got[key]}, want {want}: {got}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.path.stem for s in SCENARIOS])
def test_scenario_over_http(scenario_server: ServerProcess, scenario: Scenario) -> None:
    with scenario_server.client() as c:
        runner = Runner(c, scenario)
        runner.create_entitlement()
        for i, step in enumerate(scenario.steps):
            runner.run_step(i, step)


def test_every_scenario_file_is_loaded() -> None:
    assert len(SCENARIOS) >= 10
