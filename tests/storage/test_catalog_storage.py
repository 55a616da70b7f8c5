"""The catalog on each real backend: migrations 0550/0551 forward from the schema before them
with existing features kept, and what a subscription makes of the customer's OpenMeter
entitlements (metered budgets, static values, boolean switches; top-ups kept across a plan
change; everything ended by a cancel)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

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
