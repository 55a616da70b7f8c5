"""GET …/entitlements/{idOrFeatureKey}/value (api-contract §6.3, engine-semantics §6)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from allotment.storage.database import open_database
from tests.api import test_features as shared
from tests.api.test_features import (
    CLOCK_START,
    create_feature,
    create_meter,
    ingest,
    ok,
    problem,
    set_clock,
)
from tests.support import ServerProcess, fold_tail, unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc

YEAR = {"duration": "YEAR", "count": 1}


class Ent:
    """One metered entitlement of a fresh subject on a fresh meter and feature."""

    def __init__(
        self,
        c: httpx.Client,
        aggregation: str = "SUM",
        *,
        group_by: dict[str, str] | None = None,
        feature_extra: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.c = c
        self.meter = create_meter(c, aggregation, group_by=group_by)
        self.feature = create_feature(c, self.meter["slug"], **(feature_extra or {}))
        self.subject = unique("s-")
        body = {"type": "metered", "featureKey": self.feature["key"],
                "usagePeriod": {"interval": "MONTH"}, **extra}  # fmt: skip
        self.e = ok(c.post(f"/api/v1/subjects/{self.subject}/entitlements", json=body), 201)
        self.base = f"/api/v1/subjects/{self.subject}/entitlements/{self.e['id']}"

    def grant(self, amount: Any = 100, **extra: Any) -> dict[str, Any]:
        body = {"amount": amount, "effectiveAt": CLOCK_START, "expiration": YEAR, **extra}
        g: dict[str, Any] = ok(self.c.post(self.base + "/grants", json=_wire(body)), 201)
        return g

    def event(self, time: str, **data: Any) -> None:
        ingest(self.c, [{"type": self.meter["eventType"], "subject": self.subject, "time": time,
                         "data": _wire(data)}])  # fmt: skip

    def value(self, time: str | None = None) -> dict[str, Any]:
        params = {"time": time} if time else {}
        r = self.c.get(self.base + "/value", params=params)
        out: dict[str, Any] = json.loads(ok(r) and r.text, parse_float=Decimal)
        return out


def test_one_grant_one_usage_exact_shape(tc: httpx.Client) -> None:
    ent = Ent(tc)
    ent.grant(100)
    ent.event("2024-01-01T00:00:30Z", value=1)
    set_clock(tc, "2024-01-01T01:00:00Z")
    assert ent.value() == {"hasAccess": True, "balance": 99, "usage": 1, "overage": 0,
                           "totalAvailableGrantAmount": 100}  # fmt: skip
    by_key = ok(tc.get(f"/api/v1/subjects/{ent.subject}/entitlements/"
                       f"{ent.feature['key']}/value"))  # fmt: skip
    assert by_key["balance"] == 99


def test_no_grant_means_no_access_unless_soft_limit(tc: httpx.Client) -> None:
    hard = Ent(tc)
    hard.event("2024-01-01T00:00:00Z", value=5)
    set_clock(tc, "2024-01-01T00:10:00Z")
    assert hard.value() == {"hasAccess": False, "balance": 0, "usage": 5, "overage": 5,
                            "totalAvailableGrantAmount": 0}  # fmt: skip
    soft = Ent(tc, isSoftLimit=True)
    assert soft.value()["hasAccess"] is True


def test_exact_decimals(tc: httpx.Client) -> None:
    ent = Ent(tc)
    ent.grant(Decimal("0.3"))
    ent.event("2024-01-01T00:00:00Z", value=Decimal("0.1"))
    ent.event("2024-01-01T00:00:01Z", value=Decimal("0.2"))
    set_clock(tc, "2024-01-01T00:05:00Z")
    got = ent.value()
    assert got["balance"] == 0
    assert got["usage"] == Decimal("0.3")
    assert got["hasAccess"] is False


def test_read_time_rounds_up_and_future_reads(tc: httpx.Client) -> None:
    ent = Ent(tc)
    ent.grant(100, expiration={"duration": "DAY", "count": 1})
    ent.event("2024-01-01T00:10:30Z", value=5)
    assert ent.value("2024-01-01T00:10:00Z")["usage"] == 0
    assert ent.value("2024-01-01T00:10:01Z")["usage"] == 5
    assert ent.value("2024-01-01T23:59:00Z")["balance"] == 95
    assert ent.value("2024-01-02T00:00:00Z")["balance"] == 0  # expired exactly then
    problem(tc.get(ent.base + "/value", params={"time": "tomorrow"}), 400, "time")


def test_group_filters_select_the_usage(tc: httpx.Client) -> None:
    ent = Ent(tc, group_by={"model": "$.model"},
              feature_extra={"meterGroupByFilters": {"model": "gpt-4"}})  # fmt: skip
    ent.grant(100)
    ent.event("2024-01-01T00:00:00Z", value=10, model="gpt-4")
    ent.event("2024-01-01T00:00:00Z", value=20, model="gpt-3")
    set_clock(tc, "2024-01-01T00:01:00Z")
    assert ent.value()["usage"] == 10


def test_other_subjects_usage_does_not_count(tc: httpx.Client) -> None:
    ent = Ent(tc)
    ent.grant(100)
    ingest(tc, [{"type": ent.meter["eventType"], "subject": unique("other"),
                 "time": CLOCK_START, "data": {"value": 50}}])  # fmt: skip
    set_clock(tc, "2024-01-01T00:01:00Z")
    assert ent.value()["balance"] == 100


def test_count_unique_count_and_latest(tc: httpx.Client) -> None:
    count = Ent(tc, "COUNT")
    count.grant(10)
    unique_count = Ent(tc, "UNIQUE_COUNT")
    unique_count.grant(10)
    latest = Ent(tc, "LATEST")
    latest.grant(10)
    for minute, value in ((0, "a"), (1, "b"), (2, "a"), (3, "c")):
        t = f"2024-01-01T00:0{minute}:00Z"
        count.event(t, value=1)
        unique_count.event(t, value=value)
    latest.event("2024-01-01T00:00:00Z", value=7)
    latest.event("2024-01-01T00:02:00Z", value=4)
    set_clock(tc, "2024-01-01T00:10:00Z")
    assert count.value()["usage"] == 4
    assert unique_count.value()["usage"] == 3
    assert unique_count.value()["balance"] == 7
    got = latest.value()
    assert got["usage"] == 4
    assert got["balance"] == 6


def test_static_boolean_and_inactive_values(tc: httpx.Client) -> None:
    s = unique("s")
    f1, f2 = create_feature(tc), create_feature(tc)
    body = {"type": "static", "featureKey": f1["key"], "config": '{"a":1}'}
    st = ok(tc.post(f"/api/v1/subjects/{s}/entitlements", json=body), 201)
    ok(tc.post(f"/api/v1/subjects/{s}/entitlements",
               json={"type": "boolean", "featureKey": f2["key"]}), 201)  # fmt: skip
    base = f"/api/v1/subjects/{s}/entitlements"
    assert ok(tc.get(f"{base}/{f1['key']}/value")) == {"hasAccess": True, "config": '{"a":1}'}
    assert ok(tc.get(f"{base}/{f2['key']}/value")) == {"hasAccess": True}
    before = ok(tc.get(f"{base}/{st['id']}/value", params={"time": "2023-12-31T00:00:00Z"}))
    assert before == {"hasAccess": False}
    set_clock(tc, "2024-01-02T00:00:00Z")
    ok(tc.delete(f"{base}/{st['id']}"), 204)
    assert ok(tc.get(f"{base}/{st['id']}/value")) == {"hasAccess": False}
    problem(tc.get(f"{base}/{f1['key']}/value"), 404)  # no active entitlement by key
    earlier = ok(tc.get(f"{base}/{f1['key']}/value", params={"time": "2024-01-01T12:00:00Z"}))
    assert earlier == {"hasAccess": True, "config": '{"a":1}'}


def test_w1_late_event_still_counts(tc: httpx.Client) -> None:
    """An event arriving after reads (and a reset) for an earlier time is counted (W1)."""
    ent = Ent(tc, usagePeriod={"interval": "DAY"}, preserveOverageAtReset=True)
    ent.grant(100, maxRolloverAmount=100)
    ent.event("2024-01-01T02:00:00Z", value=30)
    set_clock(tc, "2024-01-02T12:00:00Z")
    for _ in range(3):
        assert ent.value("2024-01-01T12:00:00Z")["balance"] == 70
    assert ent.value()["balance"] == 70
    ok(tc.post(ent.base + "/reset", json={}), 204)
    ent.event("2024-01-01T01:00:00Z", value=50)  # late: before the reads and the reset
    assert ent.value("2024-01-01T12:00:00Z")["balance"] == 20
    assert ent.value()["balance"] == 20  # rolled over from the corrected balance


def test_w6_preserved_overage_is_not_absorbed_by_a_grant_expiring_at_reset(
    tc: httpx.Client,
) -> None:
    ent = Ent(tc, usagePeriod={"interval": "DAY"}, preserveOverageAtReset=True)
    ent.grant(10, expiration={"duration": "DAY", "count": 1}, maxRolloverAmount=10,
              minRolloverAmount=10)  # fmt: skip
    ent.grant(5, priority=5, effectiveAt="2024-01-02T00:00:00Z")
    ent.event("2024-01-01T10:00:00Z", value=25)  # 15 over the expiring grant
    set_clock(tc, "2024-01-02T01:00:00Z")
    got = ent.value()
    assert got["balance"] == 0  # the 5-grant pays 5 of the carried 15
    assert got["overage"] == 10
    assert got["usage"] == 0


def _wire(value: Any) -> Any:
    """JSON-ready: a Decimal goes out as the JSON number with the same text (0.1 → 0.1)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


def _digest(db_url: str) -> str:
    """A hash of every row of every table: equal digests mean nothing was written."""
    h = hashlib.sha256()
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]  # fmt: skip
            for t in tables:
                h.update(t.encode())
                for row in conn.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
                    h.update(repr(row).encode())
        finally:
            conn.close()
        return h.hexdigest()
    import psycopg

    with psycopg.connect(db_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1")]  # fmt: skip
        for t in tables:
            h.update(t.encode())
            for row in conn.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
                h.update(repr(row).encode())
    return h.hexdigest()


def test_reads_write_nothing(
    make_server: Callable[..., ServerProcess], new_db_url: Callable[[], str]
) -> None:
    db_url = new_db_url()
    server = make_server(db_url, env={"ALLOTMENT_TEST_CLOCK": CLOCK_START})
    with server.client() as c:
        ent = Ent(c, usagePeriod={"interval": "DAY"}, issueAfterReset=10)
        ent.grant(100, recurrence={"interval": "PT6H"})
        for h in range(0, 48, 5):
            ent.event(f"2024-01-{1 + h // 24:02d}T{h % 24:02d}:00:00Z", value=3)
        set_clock(c, "2024-01-03T00:00:00Z")
        # the one write a read may make: folding what ingest stored and has not folded yet
        db = open_database(db_url)
        fold_tail(db)
        db.close()
        before = _digest(db_url)
        for h in range(0, 60, 3):
            ent.value(f"2024-01-{1 + h // 24:02d}T{h % 24:02d}:17:00Z")
        ent.value()
        ok(c.get(ent.base + "/history", params={"windowSize": "HOUR"}))
        ok(c.get(ent.base))
        ok(c.get(ent.base + "/grants"))
        ok(c.get("/api/v1/entitlements"))
        ok(c.get("/api/v1/grants"))
        assert _digest(db_url) == before
