"""Entitlement-side repositories and write locking, on each real backend."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container, build_container
from allotment.domain.entitlement_inputs import parse_entitlement_create, parse_grant_create
from allotment.domain.entitlement_math import ManualReset
from allotment.domain.errors import LimitExceeded
from allotment.domain.features import Feature
from allotment.domain.ids import new_ulid
from allotment.storage import entitlements_repo, features_repo, grants_repo
from allotment.storage.database import DuplicateKey
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.grants_repo import GrantRecord
from tests.support import unique

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def c(db_url: str) -> Iterator[Container]:
    container = build_container(Settings(db_url=db_url), FrozenClock(T0))
    container.start()
    try:
        yield container
    finally:
        container.close()


def feature(c: Container, meter_slug: str | None = "m") -> Feature:
    f = Feature(new_ulid(1), unique("f"), "F", meter_slug, {"model": "x"}, {"a": "b"}, T0, T0)
    with c.db.write() as tx:
        features_repo.insert(tx, f)
    return f


def record(f: Feature, subject: str, **kw: object) -> EntitlementRecord:
    base: dict[str, object] = dict(
        id=new_ulid(2), subject_key=subject, feature_id=f.id, feature_key=f.key,
        type="metered", metadata={"k": "v"}, annotations=None, config=None,
        usage_period_interval="P1M", usage_period_anchor=T0, measure_usage_from=T0,
        is_soft_limit=True, issue_after_reset=Decimal("12.5"), issue_after_reset_priority=3,
        preserve_overage_at_reset=True, active_from=T0, active_to=None, created_at=T0,
        updated_at=T0,
    )  # fmt: skip
    base.update(kw)
    return EntitlementRecord(**base)  # type: ignore[arg-type]


def test_feature_roundtrip_and_archive(c: Container) -> None:
    f = feature(c)
    with c.db.read() as tx:
        assert features_repo.live_by_id_or_key(tx, f.key) == f
        assert features_repo.live_by_id_or_key(tx, f.id) == f
    with c.db.write() as tx:
        assert features_repo.archive(tx, f.id, 5)
        assert not features_repo.archive(tx, f.id, 6)
    with c.db.read() as tx:
        assert features_repo.live_by_id_or_key(tx, f.key) is None
        assert features_repo.ids_for(tx, [f.key]) == [f.id]


def test_entitlement_roundtrip_and_one_live_per_feature(c: Container) -> None:
    f = feature(c)
    e = record(f, "subject-1")
    with c.db.write() as tx:
        entitlements_repo.insert(tx, e)
    with c.db.read() as tx:
        assert entitlements_repo.by_id(tx, e.id) == e
    with pytest.raises(DuplicateKey), c.db.write() as tx:
        entitlements_repo.insert(tx, record(f, "subject-1", id=new_ulid(3)))
    with c.db.write() as tx:
        assert entitlements_repo.soft_delete(tx, e.id, 10)
        entitlements_repo.insert(tx, record(f, "subject-1", id=new_ulid(4)))


def test_resets_keep_retain_anchor_and_preserve_flag(c: Container) -> None:
    f = feature(c)
    e = record(f, "s")
    r1 = ManualReset(T0 + timedelta(days=3), retain_anchor=True, preserve_overage=False)
    r2 = ManualReset(T0 + timedelta(days=5), retain_anchor=False, preserve_overage=True)
    with c.db.write() as tx:
        entitlements_repo.insert(tx, e)
        entitlements_repo.insert_reset(tx, new_ulid(5), e.id, r2, r2.at, "P1M", 1)
        entitlements_repo.insert_reset(tx, new_ulid(6), e.id, r1, T0, "P1M", 1)
    with c.db.read() as tx:
        assert entitlements_repo.resets_of(tx, e.id) == [r1, r2]
    with pytest.raises(DuplicateKey), c.db.write() as tx:
        entitlements_repo.insert_reset(tx, new_ulid(7), e.id, r1, T0, "P1M", 1)


def test_grant_amounts_are_exact(c: Container) -> None:
    f = feature(c)
    e = record(f, "s")
    amounts = [Decimal("0.000000000000000001"), Decimal("123456789012345678901234.5")]
    with c.db.write() as tx:
        entitlements_repo.insert(tx, e)
        for i, amount in enumerate(amounts):
            grants_repo.insert(tx, GrantRecord(
                id=new_ulid(10 + i), entitlement_id=e.id, subject_key="s", amount=amount,
                priority=1, effective_at=T0, expiration_duration="DAY", expiration_count=1,
                expires_at=T0 + timedelta(days=1), max_rollover=amount, min_rollover=Decimal(0),
                recurrence_interval="PT6H", recurrence_anchor=T0, metadata=None,
                annotations={"issueAfterReset": True}, created_at=T0, updated_at=T0,
            ))  # fmt: skip
    with c.db.read() as tx:
        stored = grants_repo.of_entitlement(tx, e.id)
    assert [g.amount for g in stored] == amounts
    assert [g.max_rollover for g in stored] == amounts
    assert stored[0].annotations == {"issueAfterReset": True}
    assert stored[0].to_domain().recurrence is not None


def test_concurrent_grant_creates_respect_the_limit(c: Container) -> None:
    """Creates take the entitlement's lock: 20 racing creates with room for 3 give 3."""
    f = feature(c)
    body = {"type": "metered", "featureKey": f.key, "usagePeriod": {"interval": "MONTH"}}
    ent = c.entitlements.create("racer", parse_entitlement_create(body))
    c.grants.max_grants = 3
    inp = parse_grant_create({"amount": 1, "effectiveAt": "2024-01-01T00:00:00Z",
                              "expiration": {"duration": "DAY", "count": 1}})  # fmt: skip

    def attempt(_: int) -> bool:
        try:
            c.grants.create("racer", ent.record.id, inp)
        except LimitExceeded:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(20)))
    assert results.count(True) == 3
    with c.db.read() as tx:
        assert grants_repo.count_live(tx, ent.record.id) == 3


def test_concurrent_creates_make_one_live_entitlement(c: Container) -> None:
    f = feature(c)
    body = {"type": "boolean", "featureKey": f.key}

    def attempt(_: int) -> str:
        try:
            return c.entitlements.create("dup", parse_entitlement_create(body)).record.id
        except Exception as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert len([r for r in results if r != "Conflict"]) == 1
