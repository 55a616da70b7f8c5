"""Customers: the service over each real backend (validation, conflicts, resolution, replace,
soft delete, list filters, usage attribution)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container, build_container
from allotment.domain import limits
from allotment.domain.entitlement_inputs import make_paging
from allotment.domain.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
)
from allotment.storage.customers_repo import CustomerFilter
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


def body(key: str | None = None, subjects: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": kw.pop("name", "ACME")}
    if key is not None:
        out["key"] = key
    if subjects is not None:
        out["usageAttribution"] = {"subjectKeys": subjects}
    out.update(kw)
    return out


def paging(**kw: Any) -> Any:
    return make_paging(
        kw.get("page", 1), kw.get("page_size", 100), None, None, kw.get("order"),
        kw.get("order_by"), ("id", "name", "createdAt"), "id",
    )  # fmt: skip


def test_create_and_get_by_id_or_key(c: Container) -> None:
    key, s = unique("k"), unique("s")
    made = c.customers.create(
        body(key, [s], primaryEmail="a@b.test", currency="USD", description="d",
             metadata={"m": "1"}, billingAddress={"country": "US", "city": "X"})
    )  # fmt: skip
    assert made.key == key
    assert made.subject_keys == (s,)
    assert made.created_at == T0
    assert made.deleted_at is None
    for ref in (key, made.id):
        got = c.customers.get(ref)
        assert got == made
    assert c.customers.by_key(key) == made
    with pytest.raises(NotFound):
        c.customers.get(unique("nope"))


def test_rules_rejected_before_anything_is_written(c: Container) -> None:
    cases: list[tuple[Any, str]] = [
        ({"key": "x"}, "name"),
        (body(""), "key"),
        (body(name="x"), "key"),
        (body(None, []), "key"),
        (body(None, [""]), "usageAttribution.subjectKeys[0]"),
        (body("k", None, usageAttribution={}), "usageAttribution.subjectKeys"),
        (body("k", currency="usd"), "currency"),
        (body("k", currency="XAU"), "currency"),
        (body("k", billingAddress={"country": "usa"}), "billingAddress.country"),
        (body("k", metadata={"a": 1}), "metadata"),
        (body("k", primaryEmail="nope"), "primaryEmail"),
        (body("k" * 257), "key"),
        ([], "body"),
    ]
    for payload, field in cases:
        with pytest.raises(InvalidInput) as err:
            c.customers.create(payload)
        assert err.value.field == field, payload
    items, total = c.customers.list(CustomerFilter(), paging())
    assert total == 0
    assert items == []


def test_subject_keys_limit_at_n_and_n_plus_one(c: Container) -> None:
    n = limits.CUSTOMER_SUBJECT_KEYS_MAX
    prefix = unique("s")
    made = c.customers.create(body(None, [f"{prefix}-{i}" for i in range(n)]))
    assert len(made.subject_keys) == n
    with pytest.raises(LimitExceeded) as err:
        c.customers.create(body(None, [f"{prefix}-x{i}" for i in range(n + 1)]))
    assert err.value.field == "usageAttribution.subjectKeys"


def test_conflicts(c: Container) -> None:
    a = c.customers.create(body("acme", ["acme-prod"]))
    with pytest.raises(Conflict, match='key "acme" is already used') as err:
        c.customers.create(body("acme"))
    assert err.value.extensions == {"conflictingEntityId": a.id}
    with pytest.raises(Conflict, match="overlaps with id"):
        c.customers.create(body(a.id))
    with pytest.raises(Conflict, match="overlaps with subject"):
        c.customers.create(body("acme-prod"))
    with pytest.raises(Conflict, match=r"\[acme-prod\] are already associated"):
        c.customers.create(body("other", ["x1", "acme-prod"]))
    # a subject key equal to another customer's key is allowed; the key's owner wins
    b = c.customers.create(body("beta", ["acme", "beta-dev"]))
    assert c.customers.subjects_of(b) == ("beta", "beta-dev")
    assert c.customers.subjects_of(a) == ("acme", "acme-prod")
    assert c.customers.customer_of_subject("acme") == a
    assert c.customers.customer_of_subject("beta-dev") == b
    assert c.customers.customer_of_subject("zzz") is None


def test_replace_clears_omitted_fields_and_diffs_subjects(c: Container, backend: str) -> None:
    clock = c.clock
    assert isinstance(clock, FrozenClock)
    a = c.customers.create(body("a1", ["s1", "s2"], description="d", currency="EUR"))
    clock.advance(timedelta(seconds=5))
    r = c.customers.replace("a1", body(None, ["s2", "s3"], name="renamed"))
    assert r.key is None
    assert r.description is None
    assert r.currency is None
    assert r.name == "renamed"
    assert r.subject_keys == ("s2", "s3")
    assert r.updated_at == T0 + timedelta(seconds=5)
    assert r.created_at == T0
    # the released subject is free; the key can no longer resolve it, the id can
    c.customers.create(body(None, ["s1"]))
    with pytest.raises(NotFound):
        c.customers.get("a1")
    assert c.customers.get(a.id).subject_keys == ("s2", "s3")
    # replacing into a conflict changes nothing
    c.customers.create(body("taken"))
    with pytest.raises(Conflict):
        c.customers.replace(a.id, body("taken", ["s2"]))
    assert c.customers.get(a.id) == r


def test_soft_delete(c: Container) -> None:
    a = c.customers.create(body("gone", ["g1"]))
    c.customers.delete("gone")
    by_id = c.customers.get(a.id)
    assert by_id.deleted_at == T0
    assert by_id.subject_keys == ("g1",)
    assert c.customers.subjects_of(by_id) == ()
    with pytest.raises(NotFound):
        c.customers.get("gone")
    with pytest.raises(PreconditionFailed):
        c.customers.delete(a.id)
    with pytest.raises(PreconditionFailed):
        c.customers.replace(a.id, body("gone"))
    with pytest.raises(PreconditionFailed):
        c.customers.get_live(a.id)
    # key and subjects are free again; the key now names the new customer
    b = c.customers.create(body("gone", ["g1"]))
    assert c.customers.get("gone") == b
    assert c.customers.get(a.id).id == a.id


def test_list_filters_paging_and_order(c: Container) -> None:
    tag = unique("L")
    made = [
        c.customers.create(body(f"{tag}-{i}", [f"{tag}-sub-{i}"], name=f"N{i} {tag.upper()}",
                                primaryEmail=f"u{i}@{tag}.test"))
        for i in range(3)
    ]  # fmt: skip
    c.customers.delete(made[2].id)
    items, total = c.customers.list(CustomerFilter(key=tag.upper()), paging())
    assert total == 2
    assert [x.id for x in items] == [m.id for m in made[:2]]
    items, total = c.customers.list(CustomerFilter(key=tag, include_deleted=True), paging())
    assert total == 3
    items, _ = c.customers.list(CustomerFilter(name=f"n1 {tag}"), paging())
    assert [x.id for x in items] == [made[1].id]
    items, _ = c.customers.list(CustomerFilter(primary_email=f"u0@{tag}"), paging())
    assert [x.id for x in items] == [made[0].id]
    items, _ = c.customers.list(CustomerFilter(subject=f"{tag}-SUB-1"), paging())
    assert [x.id for x in items] == [made[1].id]
    items, _ = c.customers.list(CustomerFilter(key="%"), paging())
    assert items == []  # no LIKE wildcards
    items, total = c.customers.list(CustomerFilter(key=tag), paging(page=2, page_size=1))
    assert total == 2
    assert [x.id for x in items] == [made[1].id]
    items, _ = c.customers.list(CustomerFilter(key=tag), paging(order="DESC", order_by="name"))
    assert [x.id for x in items] == [made[1].id, made[0].id]
    items, _ = c.customers.list(CustomerFilter(ids=[made[0].id]), paging())
    assert [x.id for x in items] == [made[0].id]


def test_concurrent_creates_of_one_key_one_wins(c: Container) -> None:
    key = unique("race")

    def attempt(i: int) -> str:
        try:
            c.customers.create(body(key, [f"{key}-{i}"]))
            return "ok"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, range(8)))
    assert results.count("ok") == 1
    assert results.count("conflict") == 7


class _Recorder:
    def __init__(self) -> None:
        self.changing: list[str] = []
        self.told: list[str] = []

    def before_delete(self, tx: object, customer: Any) -> None:
        pass

    def subjects_changing(self, tx: object, customer: Any, subjects: Any) -> None:
        self.changing.append(customer.key)

    def attribution_changed(self, tx: object, customer: Any, subjects: Any) -> None:
        self.told.append(customer.key)


def test_guards_told_of_own_changes_and_of_precedence_changes(c: Container) -> None:
    rec = _Recorder()
    c.customers.add_guard(rec)
    a_key, b_key = unique("a"), unique("b")
    a = c.customers.create(body(a_key))
    c.customers.create(body(b_key, [a_key]))  # b's subject key is a's key: a wins
    c.customers.replace(a.id, body(a_key, ["extra"]))
    assert rec.changing == [a_key]
    c.customers.delete(a.id)  # b now counts a_key: b is told, and may not refuse
    assert rec.changing == [a_key]
    assert rec.told == [a_key, b_key]
