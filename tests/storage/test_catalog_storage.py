"""The catalog on each real backend: migrations 0550/0551 forward from the schema before them
with existing features kept, and what a subscription makes of the customer's OpenMeter
entitlements (metered budgets, static values, boolean switches; top-ups kept across a plan
change that keeps the feature, ended by one that drops it; everything ended by a cancel), and
the subscription and its entitlements written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.container import Container
from allotment.domain.catalog import parse_feature_spec
from allotment.domain.entitlement_inputs import parse_grant_create
from allotment.domain.events import validate_event
from allotment.domain.features import Feature
from allotment.domain.owners import Owner
from allotment.domain.timeutil import format_rfc3339, to_micros
from allotment.storage import catalog_repo, features_repo, migrate
from allotment.storage.database import open_database
from tests.support import frozen_container, unique

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


def test_migration_keeps_existing_features(db_url: str) -> None:
    db = open_database(db_url)
    try:
        migrate.migrate(db, to_micros(NOW))
        with db.write() as tx:  # back to the schema before the catalog
            for table in ("catalog_version", "pricing_plan_subscriptions",
                          "pricing_plan_versions", "pricing_plans"):  # fmt: skip
                tx.execute(f"DROP TABLE {table}")
            for column in ("feature_type", "enum_values", "currency", "usage_period",
                           "rate_window", "description"):  # fmt: skip
                tx.execute(f"ALTER TABLE features DROP COLUMN {column}")
            tx.execute("DELETE FROM schema_migrations WHERE version IN ('0550', '0551')")
            for key, meter in (("old_metered", "tokens"), ("old_plain", None)):
                features_repo.insert(
                    tx,
                    Feature(
                        id=unique("id").upper(),
                        key=key,
                        name=key,
                        meter_slug=meter,
                        group_filters=None,
                        metadata={"k": "v"},
                        created_at=NOW,
                        updated_at=NOW,
                    ),
                )
        assert [m.version for m in migrate.migrate(db, to_micros(NOW))] == ["0550", "0551"]
        with db.read() as tx:
            metered = catalog_repo.live_feature(tx, "old_metered")
            plain = catalog_repo.live_feature(tx, "old_plain")
            assert catalog_repo.version(tx) == 0
        assert metered is not None
        assert plain is not None
        assert (metered.type, metered.usage_period, metered.meter_reference) == (
            "NUMBER", "MONTH", "tokens")  # fmt: skip
        assert plain.type == "SWITCH"
        assert metered.feature.metadata == {"k": "v"}
    finally:
        db.close()


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with frozen_container(db_url, NOW) as container:
        yield container


def test_subscription_values_are_customer_entitlements(c: Container) -> None:
    event_type, slug = unique("t"), unique("m")
    c.meters.create({"slug": slug, "aggregation": "SUM", "eventType": event_type,
                     "valueProperty": "$.v"})  # fmt: skip
    refs = {k: unique(k) for k in ("budget", "models", "on", "off", "credit", "rpm")}
    specs = [
        {"reference": refs["budget"], "type": "NUMBER", "meter_reference": slug},
        {"reference": refs["models"], "type": "ENUM", "enum_values": ["a", "b"]},
        {"reference": refs["on"], "type": "SWITCH"},
        {"reference": refs["off"], "type": "SWITCH"},
        {"reference": refs["credit"], "type": "AMOUNT", "currency": "USD"},
        {"reference": refs["rpm"], "type": "NUMBER", "rate_window": "MINUTE"},
    ]
    for s in specs:
        c.catalog.create_feature(parse_feature_spec({"name": "F", **s}))
    full, small = unique("p"), unique("p")
    c.catalog.create_plan({"reference": full, "name": "Full", "entitlements": [
        {"feature_reference": refs["budget"], "number": 100},
        {"feature_reference": refs["models"], "enums": ["a"]},
        {"feature_reference": refs["on"], "switch": True},
        {"feature_reference": refs["off"], "switch": False},
        {"feature_reference": refs["credit"], "amount": {"value": "25.00"}},
        {"feature_reference": refs["rpm"], "number": 600},
    ]})  # fmt: skip
    c.catalog.create_plan({"reference": small, "name": "Small", "entitlements": [
        {"feature_reference": refs["budget"], "number": 40}]})  # fmt: skip
    key = unique("acme")
    cust = c.customers.create({"name": "Acme", "key": key})
    owner = Owner.customer(cust.id)
    sub = c.subscriptions.create({"customer_reference": key, "pricing_plan_reference": full})

    def kinds() -> dict[str, tuple[str, str | None]]:
        views = c.entitlements.list_for_owner(owner, include_deleted=False)
        return {v.record.feature_key: (v.record.type, v.record.config) for v in views}

    got = kinds()
    assert got[refs["budget"]][0] == "metered"
    assert got[refs["models"]] == ("static", json.dumps({"enums": ["a"]}, separators=(",", ":")))
    assert got[refs["on"]] == ("boolean", None)
    assert refs["off"] not in got
    assert json.loads(got[refs["credit"]][1] or "") == {
        "amount": {"value": "25.00", "currency": "USD"}}  # fmt: skip
    assert json.loads(got[refs["rpm"]][1] or "") == {"number": "600"}
    budget = next(v for v in c.entitlements.list_for_owner(owner, False)
                  if v.record.feature_key == refs["budget"])  # fmt: skip
    assert budget.record.usage_period_anchor == sub.subscription.start_at
    assert (budget.record.annotations or {}).get("managedBy") == "pricing_plan_subscription"

    # usage 30, a top-up of 50 on the plan's allowance, then a plan change to 40
    raw = {"specversion": "1.0", "id": unique("e"), "source": "t", "type": event_type,
           "subject": key, "time": format_rfc3339(NOW), "data": {"v": 30}}  # fmt: skip
    c.events.ingest([validate_event(raw, "event", NOW + timedelta(minutes=1))])
    clock = c.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(minutes=2))
    c.grants.create(owner, refs["budget"], parse_grant_create({
        "amount": 50, "effectiveAt": format_rfc3339(clock.now()), "priority": 10,
        "expiration": {"duration": "YEAR", "count": 1}}))  # fmt: skip
    clock.advance(timedelta(minutes=1))
    value = c.entitlements.value(owner, refs["budget"], None).metered
    assert value is not None
    assert (value.usage, value.balance) == (Decimal(30), Decimal(120))
    c.subscriptions.patch(sub.subscription.id, {"pricing_plan_reference": small})
    value = c.entitlements.value(owner, refs["budget"], None).metered
    assert value is not None
    assert (value.usage, value.balance) == (Decimal(30), Decimal(60))  # 40 + 50 − 30
    assert set(kinds()) == {refs["budget"]}  # what the small plan leaves out has ended
    c.subscriptions.cancel(sub.subscription.id)
    assert kinds() == {}
    assert c.subscriptions.entitlements(key) == []


class _Budget:
    """A meter, a MONTH budget feature, an ENUM, plans and one customer to subscribe."""

    def __init__(self, c: Container, plans: dict[str, list[dict[str, object]]]) -> None:
        self.c = c
        self.event_type, slug = unique("t"), unique("m")
        c.meters.create({"slug": slug, "aggregation": "SUM", "eventType": self.event_type,
                         "valueProperty": "$.v"})  # fmt: skip
        self.budget, self.models = unique("budget"), unique("models")
        for spec in (
            {"reference": self.budget, "type": "NUMBER", "meter_reference": slug},
            {"reference": self.models, "type": "ENUM", "enum_values": ["a", "b"]},
        ):
            c.catalog.create_feature(parse_feature_spec({"name": "F", **spec}))
        self.plans: dict[str, str] = {}
        for name, values in plans.items():
            ref = unique(name)
            self.plans[name] = ref
            items = [{**v, "feature_reference": getattr(self, str(v["feature_reference"]))}
                     for v in values]  # fmt: skip
            c.catalog.create_plan({"reference": ref, "name": name, "entitlements": items})
        self.key = unique("acme")
        self.owner = Owner.customer(c.customers.create({"name": "Acme", "key": self.key}).id)

    def subscribe(self, plan: str) -> str:
        sub = self.c.subscriptions.create(
            {"customer_reference": self.key, "pricing_plan_reference": self.plans[plan]}
        )
        return sub.subscription.id

    def ingest(self, v: int) -> None:
        now = self.c.clock.now()
        raw = {"specversion": "1.0", "id": unique("e"), "source": "t", "type": self.event_type,
               "subject": self.key, "time": format_rfc3339(now), "data": {"v": v}}  # fmt: skip
        self.c.events.ingest([validate_event(raw, "event", now + timedelta(minutes=1))])

    def tick(self) -> None:
        clock = self.c.clock
        assert isinstance(clock, FrozenClock)
        clock.advance(timedelta(minutes=1))

    def topup(self, amount: int) -> None:
        self.c.grants.create(self.owner, self.budget, parse_grant_create({
            "amount": amount, "effectiveAt": format_rfc3339(self.c.clock.now()), "priority": 10,
            "expiration": {"duration": "YEAR", "count": 1}}))  # fmt: skip

    def value(self) -> tuple[Decimal, Decimal] | None:
        items = {i.feature.reference: i for i in self.c.subscriptions.entitlements(self.key)}
        item = items.get(self.budget)
        if item is None:
            return None
        assert item.budget is not None
        return item.budget.usage, item.budget.remaining

    def state(self) -> tuple[object, ...]:
        """Everything a subscription change writes: the subscription, the customer's live
        entitlements with their terms, their live grants, and the one call's answer."""
        sub = self.c.subscriptions.current(self.key)
        views = self.c.entitlements.list_for_owner(self.owner, include_deleted=True)
        ents = sorted((v.record.id, v.record.feature_key, v.record.config,
                       v.record.issue_after_reset, v.record.deleted_at) for v in views)  # fmt: skip
        grants = sorted(
            (g.id, g.amount, g.voided_at, g.deleted_at)
            for v in views
            for g in self.c.grants.list_for_entitlement(self.owner, v.record.id, True)
        )
        plan = None if sub is None else (sub.plan.reference, sub.subscription.plan_version,
                                          dict(sub.subscription.overrides))  # fmt: skip
        return plan, ents, grants, self.value()


def test_a_plan_change_that_drops_the_budget_ends_it_with_its_top_ups(c: Container) -> None:
    """The decision (docs/catalog.md "Budgets are entitlements"): top-ups belong to the
    budget's entitlement; a plan change that keeps the feature keeps them, one that drops it
    ends the entitlement with its grants (as a cancel does; they stay readable as deleted), and
    a later plan with the feature again starts a new entitlement with only the plan's
    allowance — usage of the current period still counts, the anchor is still start_at."""
    w = _Budget(c, {"pro": [{"feature_reference": "budget", "number": 100}],
                    "pro2": [{"feature_reference": "budget", "number": 200}],
                    "free": [{"feature_reference": "models", "enums": ["a"]}]})  # fmt: skip
    sub = w.subscribe("pro")
    w.ingest(30)
    w.tick()
    w.topup(50)
    w.tick()
    assert w.value() == (Decimal(30), Decimal(120))
    c.subscriptions.patch(sub, {"pricing_plan_reference": w.plans["pro2"]})  # keeps the feature
    assert w.value() == (Decimal(30), Decimal(220))  # 200 + 50 − 30: the top-up survived
    (first,) = c.entitlements.list_for_owner(w.owner, include_deleted=False)
    c.subscriptions.patch(sub, {"pricing_plan_reference": w.plans["free"]})  # drops it
    assert w.value() is None
    live = c.entitlements.list_for_owner(w.owner, include_deleted=False)
    assert [v.record.feature_key for v in live] == [w.models]
    old = c.grants.list_for_entitlement(w.owner, first.record.id, include_deleted=True)
    assert old  # readable, deleted with it
    assert all(g.deleted_at is not None for g in old)
    w.tick()
    w.ingest(5)
    w.tick()
    c.subscriptions.patch(sub, {"pricing_plan_reference": w.plans["pro"]})  # the feature again
    assert w.value() == (Decimal(35), Decimal(65))  # 100 − 35: no top-up, the period's usage
    (again,) = [v for v in c.entitlements.list_for_owner(w.owner, False)
                if v.record.feature_key == w.budget]  # fmt: skip
    assert again.record.id != first.record.id
    assert again.record.usage_period_anchor == first.record.usage_period_anchor


class _Boom(Exception):
    pass


def test_a_failure_mid_sync_leaves_subscription_and_entitlements_unchanged(
    c: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription's write and its entitlements' are one transaction: a failure after
    the budget was written (here, injected into the second item's write) rolls both back —
    on create, on a plan change, on an override and on cancel."""
    w = _Budget(c, {"pro": [{"feature_reference": "budget", "number": 100},
                            {"feature_reference": "models", "enums": ["a"]}],
                    "max": [{"feature_reference": "budget", "number": 900},
                            {"feature_reference": "models", "enums": ["a", "b"]}]})  # fmt: skip
    real = c.customer_entitlements.put_plain_in
    real_remove = c.customer_entitlements.remove_in

    def boom(*args: object, **kwargs: object) -> object:
        raise _Boom

    monkeypatch.setattr(c.customer_entitlements, "put_plain_in", boom)
    before = w.state()
    with pytest.raises(_Boom):
        w.subscribe("pro")
    assert w.state() == before == (None, [], [], None)
    monkeypatch.setattr(c.customer_entitlements, "put_plain_in", real)
    sub = w.subscribe("pro")
    w.ingest(30)
    w.tick()
    w.topup(50)
    w.tick()
    monkeypatch.setattr(c.customer_entitlements, "put_plain_in", boom)
    before = w.state()
    assert before[3] == (Decimal(30), Decimal(120))
    for body in (
        {"pricing_plan_reference": w.plans["max"]},
        {"entitlements": [{"feature_reference": w.budget, "number": 7}]},
    ):
        with pytest.raises(_Boom):
            c.subscriptions.patch(sub, body)
        assert w.state() == before, body
    monkeypatch.setattr(c.customer_entitlements, "put_plain_in", real)
    calls = [0]

    def remove_then_boom(*args: Any, **kwargs: Any) -> bool:
        calls[0] += 1
        if calls[0] == 2:
            raise _Boom
        return real_remove(*args, **kwargs)

    monkeypatch.setattr(c.customer_entitlements, "remove_in", remove_then_boom)
    with pytest.raises(_Boom):
        c.subscriptions.cancel(sub)
    assert calls[0] == 2
    assert w.state() == before
    monkeypatch.setattr(c.customer_entitlements, "remove_in", real_remove)
    c.subscriptions.patch(sub, {"pricing_plan_reference": w.plans["max"]})
    assert w.value() == (Decimal(30), Decimal(920))


def test_an_override_keeps_top_ups_across_a_plan_without_the_feature(c: Container) -> None:
    """What docs/catalog.md advises: an override of 0 keeps the entitlement (and its top-ups)
    on a plan that leaves the feature out; removing the override then ends it."""
    w = _Budget(c, {"pro": [{"feature_reference": "budget", "number": 100}],
                    "free": [{"feature_reference": "models", "enums": ["a"]}]})  # fmt: skip
    sub = w.subscribe("pro")
    w.ingest(30)
    w.tick()
    w.topup(50)
    w.tick()
    c.subscriptions.patch(sub, {"entitlements": [{"feature_reference": w.budget, "number": 0}],
                                "pricing_plan_reference": w.plans["free"]})  # fmt: skip
    assert w.value() == (Decimal(30), Decimal(20))  # 0 + 50 − 30
    c.subscriptions.patch(sub, {"entitlements": [{"feature_reference": w.budget,
                                                  "override": False}]})  # fmt: skip
    assert w.value() is None
