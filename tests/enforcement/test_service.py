"""EnforcementService on real storage (SQLite and PostgreSQL) with the catalog port faked:
the all-or-nothing decision, codes, idempotency, reservations' lifecycle and TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.domain import enforcement as rules
from allotment.domain.errors import InvalidInput, LimitExceeded, NotFound
from allotment.services.enforcement import EnforcementService
from allotment.storage.database import Database
from allotment.storage.enforcement_repo import EnforcementStore
from tests.enforcement.fakes import FakeCatalog, standard

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def cat() -> FakeCatalog:
    return standard()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def svc(db: Database, cat: FakeCatalog, clock: FrozenClock) -> EnforcementService:
    return EnforcementService(EnforcementStore(db), cat, cat, clock)


def auth(svc: EnforcementService, customer: str, **body: Any) -> Any:
    return svc.authorize(customer, rules.parse_authorize(body))


def test_checks_enum_switch_number_and_not_entitled(svc: EnforcementService) -> None:
    ok = auth(
        svc, "acme", checks=[{"feature_reference": "available_models", "value": "gpt-4o-mini"}]
    )
    assert ok.reservation_id is None
    with pytest.raises(rules.EnumValueNotAllowed) as e:
        auth(svc, "acme", checks=[{"feature_reference": "available_models", "value": "gpt-4o"}])
    assert e.value.extensions["pricing_plan_reference"] == "starter"
    assert e.value.extensions["plans_including"] == ["pro"]
    assert "'gpt-4o'" in e.value.detail
    assert "'starter'" in e.value.detail
    assert "'pro'" in e.value.detail
    with pytest.raises(rules.SwitchOff):
        auth(svc, "acme", checks=[{"feature_reference": "priority_queue"}])
    auth(svc, "big", checks=[{"feature_reference": "priority_queue"}])
    with pytest.raises(rules.NotEntitled) as ne:
        auth(svc, "acme", checks=[{"feature_reference": "max_file_mb"}])
    assert ne.value.field == "checks[0]"
    auth(svc, "big", checks=[{"feature_reference": "max_file_mb", "value": 10}])
    with pytest.raises(rules.NotEntitled):
        auth(svc, "big", checks=[{"feature_reference": "max_file_mb", "value": "10.5"}])
    with pytest.raises(InvalidInput) as bad:
        auth(svc, "acme", checks=[{"feature_reference": "available_models"}])
    assert bad.value.field == "checks[0].value"
    with pytest.raises(NotFound):
        auth(svc, "nobody", checks=[])


def test_rate_limit_exact_with_retry_after(svc: EnforcementService, clock: FrozenClock) -> None:
    consume = [{"feature_reference": "requests_per_minute"}]
    for i in range(3):
        r = auth(svc, "acme", consume=consume)
        assert r.remaining["requests_per_minute"] == 2 - i
        clock.advance(timedelta(seconds=10))
    with pytest.raises(rules.RateLimited) as e:
        auth(svc, "acme", consume=consume)
    # the first of three was at 0 s; now is 30 s: it leaves the window at 60 s
    assert e.value.retry_after_us == 30_000_000
    assert e.value.states[0].remaining == 0
    clock.advance(timedelta(seconds=30) - timedelta(microseconds=1))
    with pytest.raises(rules.RateLimited):
        auth(svc, "acme", consume=consume)
    clock.advance(timedelta(microseconds=1))
    auth(svc, "acme", consume=consume)
    for _ in range(50):  # unlimited on pro
        auth(svc, "big", consume=consume)
    with pytest.raises(rules.NotEntitled):
        auth(svc, "acme", consume=[{"feature_reference": "requests_per_minute", "amount": 4}])
    with pytest.raises(InvalidInput) as bad:
        auth(svc, "acme", consume=[{"feature_reference": "monthly_token_budget"}])
    assert bad.value.field == "consume[0].feature_reference"


def test_all_or_nothing(svc: EnforcementService, cat: FakeCatalog) -> None:
    """A failing reserve applies no consume; a failing consume holds nothing."""
    for _ in range(3):
        auth(
            svc,
            "acme",
            consume=[{"feature_reference": "requests_per_minute"}],
            reserve=[{"feature_reference": "monthly_token_budget", "amount": 300}],
        )
    # the fourth request fails on the rate limit: its 300 is not held
    with pytest.raises(rules.RateLimited):
        auth(
            svc,
            "acme",
            consume=[{"feature_reference": "requests_per_minute"}],
            reserve=[{"feature_reference": "monthly_token_budget", "amount": 100}],
        )
    assert svc.held("id-acme") == {"monthly_token_budget": Decimal(900)}
    with pytest.raises(rules.BudgetExhausted) as e:
        auth(svc, "acme", reserve=[{"feature_reference": "monthly_token_budget", "amount": 101}])
    assert e.value.extensions["reserved"] == "900"
    r = auth(svc, "acme", reserve=[{"feature_reference": "monthly_token_budget", "amount": 100}])
    assert r.remaining == {"monthly_token_budget": Decimal(0)}


def test_soft_limit_allows_and_reports_overage(svc: EnforcementService) -> None:
    r = auth(svc, "big", reserve=[{"feature_reference": "monthly_token_budget", "amount": 150}])
    assert r.overage == {"monthly_token_budget": Decimal(50)}
    assert r.remaining == {"monthly_token_budget": Decimal(-50)}


def test_commit_records_once_and_frees_the_rest(svc: EnforcementService, cat: FakeCatalog) -> None:
    r = auth(svc, "acme", reserve=[{"feature_reference": "monthly_token_budget", "amount": 400}])
    assert svc.held("id-acme") == {"monthly_token_budget": Decimal(400)}
    commit = rules.parse_commit({"amounts": {"monthly_token_budget": "312"}})
    v = svc.commit(r.reservation_id, commit)
    assert v.status == "committed"
    assert v.items[0].committed == Decimal(312)
    assert v.event_ids == (f"{r.reservation_id}-monthly_token_budget",)
    again = svc.commit(
        r.reservation_id, rules.parse_commit({"amounts": {"monthly_token_budget": 999}})
    )
    assert again.status == "committed"
    assert again.items[0].committed == Decimal(312)
    assert cat.usage[("acme", "tokens")] == Decimal(312)
    assert svc.held("id-acme") == {}
    with pytest.raises(rules.ReservationSettled):
        svc.release(r.reservation_id)
    # what is left: 1000 - 312
    with pytest.raises(rules.BudgetExhausted):
        auth(svc, "acme", reserve=[{"feature_reference": "monthly_token_budget", "amount": 689}])
    auth(svc, "acme", reserve=[{"feature_reference": "monthly_token_budget", "amount": 688}])


def test_release_and_ttl_free_the_hold(svc: EnforcementService, clock: FrozenClock) -> None:
    item = {"feature_reference": "monthly_token_budget", "amount": 1000, "ttl_seconds": 60}
    r = auth(svc, "acme", reserve=[item])
    with pytest.raises(rules.BudgetExhausted):
        auth(svc, "acme", reserve=[{**item, "amount": 1}])
    assert svc.release(r.reservation_id).status == "released"
    assert svc.release(r.reservation_id).status == "released"
    with pytest.raises(rules.ReservationSettled):
        svc.commit(r.reservation_id, rules.parse_commit({}))
    r2 = auth(svc, "acme", reserve=[item])
    clock.advance(timedelta(seconds=59))
    with pytest.raises(rules.BudgetExhausted):
        auth(svc, "acme", reserve=[{**item, "amount": 1}])
    clock.advance(timedelta(seconds=1))
    assert svc.get(r2.reservation_id).status == "expired"
    assert svc.held("id-acme") == {}
    auth(svc, "acme", reserve=[{**item, "amount": 1}])
    # a late commit still records what was used
    late = svc.commit(
        r2.reservation_id, rules.parse_commit({"amounts": {"monthly_token_budget": 5}})
    )
    assert late.status == "committed"
    with pytest.raises(InvalidInput) as bad:
        svc.commit(
            auth(svc, "acme", reserve=[{**item, "amount": 1}]).reservation_id,
            rules.parse_commit({"amounts": {"other": 1}}),
        )
    assert bad.value.field == "amounts.other"
    with pytest.raises(NotFound):
        svc.get("nope")


def test_idempotency_returns_first_answer_and_applies_nothing_again(
    svc: EnforcementService, clock: FrozenClock
) -> None:
    body = {
        "consume": [{"feature_reference": "requests_per_minute"}],
        "reserve": [{"feature_reference": "monthly_token_budget", "amount": 10}],
        "idempotency_key": "req-1",
    }
    first = auth(svc, "acme", **body)
    for _ in range(5):
        again = auth(svc, "acme", **body)
        assert again.replayed
        assert again.reservation_id == first.reservation_id
        assert again.remaining == first.remaining
    assert svc.held("id-acme") == {"monthly_token_budget": Decimal(10)}
    r = auth(svc, "acme", consume=body["consume"])
    assert r.remaining["requests_per_minute"] == 1  # only two consumed
    with pytest.raises(rules.IdempotencyKeyReused):
        auth(svc, "acme", **{**body, "reserve": []})
    # a denial is a first answer too
    auth(svc, "acme", consume=body["consume"])
    deny = {"consume": body["consume"], "idempotency_key": "req-2"}
    with pytest.raises(rules.RateLimited) as e1:
        auth(svc, "acme", **deny)
    clock.advance(timedelta(minutes=5))
    with pytest.raises(rules.RateLimited) as e2:
        auth(svc, "acme", **deny)
    assert e2.value.retry_after_us == e1.value.retry_after_us
    # after 24 h the key is free again
    clock.advance(timedelta(hours=24))
    assert not auth(svc, "acme", **deny).replayed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"checks": "x"}, "checks"),
        ({"consume": [{"feature_reference": "a", "amount": 0}]}, "consume[0].amount"),
        ({"consume": [{"feature_reference": "a", "amount": 1.5}]}, "consume[0].amount"),
        (
            {"consume": [{"feature_reference": "a"}, {"feature_reference": "a"}]},
            "consume[1].feature_reference",
        ),
        ({"reserve": [{"feature_reference": "a"}]}, "reserve[0].amount"),
        ({"reserve": [{"feature_reference": "a", "amount": "-1"}]}, "reserve[0].amount"),
        (
            {"reserve": [{"feature_reference": "a", "amount": 1, "ttl_seconds": 86401}]},
            "reserve[0].ttl_seconds",
        ),
        ({"reserve": [{"feature_reference": "a", "amount": 1, "extra": 1}]}, "reserve[0].extra"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"nope": 1}, "nope"),
    ],
)
def test_bad_input_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        rules.parse_authorize(body)
    assert e.value.field == field


def test_limits_at_n_and_n_plus_one() -> None:
    from allotment.domain import limits

    n = limits.AUTHORIZE_ITEMS_MAX
    items = [{"feature_reference": f"f{i}"} for i in range(n)]
    rules.parse_authorize({"checks": items})
    with pytest.raises(LimitExceeded):
        rules.parse_authorize({"checks": [*items, {"feature_reference": "x"}]})
    k = limits.IDEMPOTENCY_KEY_LENGTH_MAX
    rules.parse_authorize({"idempotency_key": "k" * k})
    with pytest.raises(LimitExceeded):
        rules.parse_authorize({"idempotency_key": "k" * (k + 1)})
    m = limits.RATE_CONSUME_AMOUNT_MAX
    rules.parse_authorize({"consume": [{"feature_reference": "a", "amount": m}]})
    with pytest.raises(InvalidInput):
        rules.parse_authorize({"consume": [{"feature_reference": "a", "amount": m + 1}]})
    t = limits.RESERVATION_TTL_SECONDS_MAX
    rules.parse_authorize({"reserve": [{"feature_reference": "a", "amount": 1, "ttl_seconds": t}]})


def test_concurrent_reserves_succeed_exactly_floor_r_over_a(
    svc: EnforcementService, cat: FakeCatalog
) -> None:
    """24 threads reserve 70 each against 1000: exactly 14 succeed, the rest are 402."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> bool:
        try:
            auth(svc, "acme", reserve=[{"feature_reference": "monthly_token_budget", "amount": 70}])
        except rules.BudgetExhausted:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(24)))
    assert sum(outcomes) == 1000 // 70
    assert svc.held("id-acme") == {"monthly_token_budget": Decimal(70 * (1000 // 70))}


def test_concurrent_consumes_allow_exactly_the_limit(svc: EnforcementService) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> bool:
        try:
            auth(svc, "acme", consume=[{"feature_reference": "requests_per_minute"}])
        except rules.RateLimited:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(one, range(20))) == 3


def test_concurrent_requests_with_one_key_apply_once(svc: EnforcementService) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = {
        "reserve": [{"feature_reference": "monthly_token_budget", "amount": 10}],
        "idempotency_key": "same",
    }
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: auth(svc, "acme", **body), range(16)))
    assert len({a.reservation_id for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    assert svc.held("id-acme") == {"monthly_token_budget": Decimal(10)}
