"""The notification evaluator on each real backend, in process on a frozen clock: what a
crash between an ingest commit and its evaluation leaves behind is found by the next start's
sweep; a second evaluator (a restart, another replica) never fires a mark twice; changes made
by another process are found by the periodic sweep; automatic resets fire at the period
boundary; every event commits with its outbox rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from allotment.clock import FrozenClock
from allotment.config import load_file
from allotment.container import Container
from allotment.domain.entitlement_inputs import (
    parse_entitlement_create,
    parse_feature_create,
    parse_grant_create,
)
from allotment.domain.events import validate_event
from allotment.domain.notifications import parse_channel, parse_rule
from allotment.domain.owners import Owner
from allotment.services.notification_evaluator import NotificationEvaluator
from tests.notify_support import notify_container
from tests.storage.test_catalog_storage import _Budget
from tests.support import EXAMPLE_CONFIG, unique

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    with notify_container(replace(load_file(str(EXAMPLE_CONFIG)), db_url=db_url), T0) as c:
        yield c


def _clock(c: Container) -> FrozenClock:
    assert isinstance(c.clock, FrozenClock)
    return c.clock


def _setup(c: Container, rule: dict[str, object], *, scoped: bool = True) -> tuple[str, str]:
    fkey = unique("f")
    c.features.create(
        parse_feature_create({"key": fkey, "name": fkey, "meterSlug": "tokens_total"})
    )
    subject = unique("s")
    view = c.entitlements.create(subject, parse_entitlement_create(
        {"type": "metered", "featureKey": fkey, "usagePeriod": {"interval": "DAY"},
         "issueAfterReset": 100}))  # fmt: skip
    ch = c.notifications.create_channel(
        parse_channel({"type": "WEBHOOK", "name": "c", "url": "http://127.0.0.1:9/h"})
    )
    scope = {"features": [fkey]} if scoped else {}
    c.notifications.create_rule(parse_rule({"name": "r", "channels": [ch.id], **scope, **rule}))
    return subject, view.record.id


def _ingest(c: Container, subject: str, tokens: int) -> None:
    raw = {"specversion": "1.0", "id": unique("e"), "source": "t", "type": "prompt",
           "subject": subject, "time": (c.clock.now()).isoformat(),
           "data": {"tokens": tokens, "model": "m", "type": "in"}}  # fmt: skip
    assert c.events.ingest([validate_event(raw, "event", c.clock.now())]) == 1
    _clock(c).advance(timedelta(minutes=1))  # the value at "now" counts the event's minute


def _counts(c: Container) -> tuple[int, int, int]:
    with c.db.read() as tx:
        (events,) = tx.execute("SELECT COUNT(*) FROM notification_events")[0]
        (outbox,) = tx.execute("SELECT COUNT(*) FROM notification_deliveries")[0]
        (marks,) = tx.execute("SELECT COUNT(*) FROM notification_marks")[0]
    return int(events), int(outbox), int(marks)


def _evaluator(c: Container, **kw: float) -> NotificationEvaluator:
    return NotificationEvaluator(c.db, c.clock, c.notifications, c.entitlements, **kw)


THRESHOLDS = {"type": "entitlements.balance.threshold",
              "thresholds": [{"value": 50, "type": "usage_percentage"},
                             {"value": 100, "type": "usage_value"}]}  # fmt: skip


def test_a_restart_finds_what_a_crash_left_unevaluated_and_never_fires_twice(c: Container) -> None:
    subject, _ = _setup(c, THRESHOLDS)
    _clock(c).advance(timedelta(minutes=5))
    _ingest(c, subject, 70)  # committed; the process "died" before evaluating it
    assert _counts(c) == (0, 0, 0)
    first = _evaluator(c)  # the next start: its first pass sweeps everything
    assert first.run_pass() == 1
    assert _counts(c) == (1, 1, 1)  # the event, its outbox row and its mark, together
    again = _evaluator(c)  # another restart, or another replica
    assert again.run_pass() == 0
    assert first.run_pass() == 0
    assert _counts(c) == (1, 1, 1)


def test_the_periodic_sweep_finds_another_process_s_ingest(c: Container) -> None:
    subject, _ = _setup(c, THRESHOLDS)
    ev = _evaluator(c, sweep_seconds=0.0)
    assert ev.run_pass() == 0
    _clock(c).advance(timedelta(minutes=5))
    _ingest(c, subject, 40)  # 40 %: nothing
    assert ev.run_pass() == 0
    _ingest(c, subject, 70)  # 110: both thresholds, written by "another process"
    assert ev.run_pass() == 2
    assert ev.run_pass() == 0
    assert _counts(c) == (2, 2, 2)


def test_automatic_reset_fires_at_the_period_boundary_once(c: Container) -> None:
    subject, _ = _setup(c, {"type": "entitlements.reset"})
    ev = _evaluator(c, sweep_seconds=3600.0)
    assert ev.run_pass() == 0  # the first period: no reset yet
    _clock(c).advance(timedelta(days=1, minutes=1))  # past the DAY period's end
    assert ev.run_pass() == 1
    assert ev.run_pass() == 0
    _clock(c).advance(timedelta(days=1))
    assert ev.run_pass() == 1
    assert _counts(c)[0] == 2
    with c.db.read() as tx:
        payloads = [r[0] for r in tx.execute("SELECT payload FROM notification_events")]
    assert all(subject in p and '"entitlements.reset"' in p for p in payloads)


def test_thresholds_rearm_in_the_next_period(c: Container) -> None:
    subject, _ = _setup(c, {"type": "entitlements.balance.threshold",
                            "thresholds": [{"value": 50, "type": "PERCENT"}]})  # fmt: skip
    ev = _evaluator(c, sweep_seconds=0.0)
    _clock(c).advance(timedelta(minutes=5))
    _ingest(c, subject, 60)
    assert ev.run_pass() == 1
    _ingest(c, subject, 10)
    assert ev.run_pass() == 0  # once per period
    _clock(c).advance(timedelta(days=1))
    _ingest(c, subject, 60)
    assert ev.run_pass() == 1  # the new period


def test_a_rule_without_features_applies_to_every_feature(c: Container) -> None:
    subject, _ = _setup(c, THRESHOLDS, scoped=False)
    ev = _evaluator(c, sweep_seconds=0.0)
    _ingest(c, subject, 100)
    assert ev.run_pass() == 2


def test_an_expiring_grant_crosses_a_balance_threshold_with_no_usage(c: Container) -> None:
    fkey = unique("f")
    c.features.create(
        parse_feature_create({"key": fkey, "name": fkey, "meterSlug": "tokens_total"})
    )
    subject = unique("s")
    c.entitlements.create(
        subject,
        parse_entitlement_create(
            {"type": "metered", "featureKey": fkey, "usagePeriod": {"interval": "MONTH"}}
        ),
    )
    c.grants.create(subject, fkey, parse_grant_create(
        {"amount": 100, "effectiveAt": T0.isoformat(),
         "expiration": {"duration": "HOUR", "count": 1}}))  # fmt: skip
    ch = c.notifications.create_channel(
        parse_channel({"type": "WEBHOOK", "name": "c", "url": "http://127.0.0.1:9/h"})
    )
    c.notifications.create_rule(
        parse_rule(
            {
                "type": "entitlements.balance.threshold",
                "name": "r",
                "channels": [ch.id],
                "features": [fkey],
                "thresholds": [{"value": 0, "type": "balance_value"}],
            }
        )
    )
    ev = _evaluator(c, sweep_seconds=3600.0)
    _clock(c).advance(timedelta(minutes=5))
    _ingest(c, subject, 10)  # balance 90
    assert ev.run_pass() == 0
    _clock(c).advance(timedelta(hours=1))  # the grant has expired: balance 0, no usage
    assert ev.run_pass() == 1
    assert ev.run_pass() == 0


def test_a_late_event_crosses_a_threshold(c: Container) -> None:
    subject, _ = _setup(c, THRESHOLDS)
    ev = _evaluator(c, sweep_seconds=3600.0)
    assert ev.run_pass() == 0
    _clock(c).advance(timedelta(hours=3))
    late = c.clock.now() - timedelta(hours=2)  # happened two hours ago, arrives now
    raw = {"specversion": "1.0", "id": unique("e"), "source": "t", "type": "prompt",
           "subject": subject, "time": late.isoformat(),
           "data": {"tokens": 60, "model": "m", "type": "in"}}  # fmt: skip
    assert c.events.ingest([validate_event(raw, "event", c.clock.now())]) == 1
    ev.touched(
        [(c.meters.get("tokens_total").id, subject)]
    )  # what the writer hands over after the commit
    assert ev.run_pass() == 1  # 60 of 100: past 50 %


def _customer_entitlement(c: Container, fkey: str, key: str, subjects: list[str]) -> str:
    made = c.customers.create(
        {"name": key, "key": key, "usageAttribution": {"subjectKeys": subjects}}
    )
    c.entitlements.create(Owner.customer(made.id), parse_entitlement_create(
        {"type": "metered", "featureKey": fkey, "usagePeriod": {"interval": "DAY"},
         "issueAfterReset": 100}))  # fmt: skip
    return made.id


def _customers_setup(c: Container) -> str:
    """A subject's entitlement under THRESHOLDS on one feature, and THRESHOLDS on a second
    feature (returned) for the customers' entitlements."""
    _setup(c, THRESHOLDS)
    fkey = unique("f")
    c.features.create(
        parse_feature_create({"key": fkey, "name": fkey, "meterSlug": "tokens_total"})
    )
    ch = c.notifications.create_channel(
        parse_channel({"type": "WEBHOOK", "name": "c", "url": "http://127.0.0.1:9/h"})
    )
    c.notifications.create_rule(
        parse_rule({"name": "r", "channels": [ch.id], "features": [fkey], **THRESHOLDS})
    )
    return fkey


def _payload_customers(c: Container) -> list[str]:
    with c.db.read() as tx:
        rows = tx.execute("SELECT payload FROM notification_events ORDER BY id")
    return [json.loads(r[0])["data"].get("customer", {}).get("id", "-") for r in rows]


def test_customer_entitlements_fire_on_their_subjects_usage_with_key_precedence(
    c: Container,
) -> None:
    """Only the hand-over drives this evaluator (no sweep after the first pass): an ingest on
    a subject reaches the customer whose usage it is — a customer's key wins over another
    customer's subject key — and a grant written on a customer entitlement is seen."""
    fkey = _customers_setup(c)
    other_key, s1 = unique("other"), unique("s1")
    other = _customer_entitlement(c, fkey, other_key, [])
    acme = _customer_entitlement(c, fkey, unique("acme"), [s1, other_key])
    ev = _evaluator(c, sweep_seconds=3600.0)
    c.events.after_commit = ev.touched
    c.entitlements.on_scope_change = ev.scope_changed
    c.grants.on_scope_change = ev.scope_changed
    assert ev.run_pass() == 0  # the first, full sweep
    _clock(c).advance(timedelta(minutes=5))
    _ingest(c, other_key, 60)  # the other customer's key: its usage, not ACME's
    assert ev.run_pass() == 1
    assert _payload_customers(c) == [other]
    _ingest(c, s1, 60)  # ACME's subject key: 60 of 100
    assert ev.run_pass() == 1
    assert _payload_customers(c) == [other, acme]
    c.grants.create(Owner.customer(acme), fkey, parse_grant_create(
        {"amount": 100, "effectiveAt": c.clock.now().isoformat(),
         "expiration": {"duration": "DAY", "count": 1}}))  # fmt: skip
    _ingest(c, s1, 40)  # 100 of 200: the usage_value threshold, not 50 % again
    assert ev.run_pass() == 1
    assert _payload_customers(c) == [other, acme, acme]
    with c.db.read() as tx:
        (key,) = tx.execute("SELECT subject_key FROM notification_events ORDER BY id")[2]
    assert key == c.customers.get(acme).key  # the customer's first usage subject: its key


def test_a_customer_gaining_a_subject_key_is_found_by_the_next_sweep(c: Container) -> None:
    """The usage of a subject key added by a replace becomes the customer's; the replace bumps
    the customer's scopes, which the periodic sweep maps back to the customer owner."""
    fkey = _customers_setup(c)
    key, s1, s2 = unique("acme"), unique("s1"), unique("s2")
    acme = _customer_entitlement(c, fkey, key, [s1])
    ev = _evaluator(c, sweep_seconds=0.0)
    assert ev.run_pass() == 0
    _clock(c).advance(timedelta(minutes=5))
    _ingest(c, s2, 70)  # nobody's usage yet
    assert ev.run_pass() == 0
    c.customers.replace(acme, {"name": key, "key": key,
                               "usageAttribution": {"subjectKeys": [s1, s2]}})  # fmt: skip
    assert ev.run_pass() == 1  # 70 of 100: 50 %
    assert _payload_customers(c) == [acme]


def test_a_plans_budget_fires_through_an_override_a_top_up_and_a_plan_change(
    c: Container,
) -> None:
    """Issue 19: "the catalog's budgets (plans, overrides, top-ups) are entitlements, so the
    same rules apply to them". A plan's budget of 100 under THRESHOLDS (50 %, usage 100):
    40 used is nothing; an override to 60 puts it past 50 % (fires once); a top-up and a plan
    change to 1000 (the override removed) fire nothing new; 70 more reach usage 110 (fires
    the usage threshold once). The events carry the customer."""
    w = _Budget(c, {"pro": [{"feature_reference": "budget", "number": 100}],
                    "max": [{"feature_reference": "budget", "number": 1000}]})  # fmt: skip
    ch = c.notifications.create_channel(
        parse_channel({"type": "WEBHOOK", "name": "c", "url": "http://127.0.0.1:9/h"})
    )
    c.notifications.create_rule(
        parse_rule({"name": "r", "channels": [ch.id], "features": [w.budget], **THRESHOLDS})
    )
    ev = _evaluator(c, sweep_seconds=0.0)
    sub = w.subscribe("pro")
    w.ingest(40)
    w.tick()
    assert ev.run_pass() == 0  # 40 %
    c.subscriptions.patch(sub, {"entitlements": [{"feature_reference": w.budget, "number": 60}]})
    assert ev.run_pass() == 1  # 40 of 60: past 50 %
    w.topup(100)
    w.tick()
    c.subscriptions.patch(sub, {"pricing_plan_reference": w.plans["max"], "entitlements": [
        {"feature_reference": w.budget, "override": False}]})  # fmt: skip
    assert ev.run_pass() == 0  # 40 of 1100: nothing new, 50 % already fired this period
    w.ingest(70)
    w.tick()
    assert ev.run_pass() == 1  # usage 110: the usage_value threshold
    assert ev.run_pass() == 0
    assert _counts(c) == (2, 2, 2)
    customer = c.customers.get(w.key)
    assert _payload_customers(c) == [customer.id, customer.id]
