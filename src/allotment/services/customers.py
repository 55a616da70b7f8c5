"""Customers: create, get by id or key, list, full replace, soft delete, usage attribution.

The API other services use (the catalog, customer-owned entitlements):

* :meth:`CustomerService.resolve` inside a caller's transaction — OpenMeter's
  ``{customerIdOrKey}`` rule (id, else live key; a deleted customer is found by id only) and,
  with ``live=True``, 412 for a deleted customer;
* :meth:`CustomerService.subjects_of` — the event subjects whose usage is the customer's (its
  key and subject keys; a subject key that is another live customer's key goes to that one);
* :meth:`CustomerService.customer_of_subject` — which customer an event subject belongs to;
* :meth:`CustomerService.add_guard` — a collaborator that must agree before a customer is
  deleted or its subjects change (entitlements: 409 while it has active ones; the catalog:
  400 while it has an active subscription). Guards run inside the write transaction.

Every write validates its whole input before its transaction starts; the conflicts with other
customers are checked inside it (and a lost race on a unique index is reported the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from allotment.clock import Clock
from allotment.domain import customers as rules
from allotment.domain.customers import Customer, CustomerInput
from allotment.domain.customers import customer_deleted as deleted
from allotment.domain.customers import customer_not_found as not_found
from allotment.domain.entitlement_inputs import Paging
from allotment.domain.errors import Conflict
from allotment.domain.ids import new_ulid
from allotment.domain.timeutil import to_micros
from allotment.storage import customers_repo
from allotment.storage.customers_repo import CustomerFilter
from allotment.storage.database import Database, DuplicateKey, Tx

RETRIES = 3
"""Write attempts when a concurrent writer takes a key first (the retry names the conflict)."""


class CustomerGuard(Protocol):
    def before_delete(self, tx: Tx, customer: Customer) -> None:
        """Raise a DomainError to refuse the deletion."""

    def subjects_changing(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        """A replace of this customer makes its attributed subjects ``subjects`` (its key or
        subject keys changed) in this transaction: raise to refuse, or bump what depends on
        them. A guard may also define ``attribution_changed(tx, customer, subjects)``: told,
        without the right to refuse, when the subjects change otherwise — the customer was
        deleted, or another customer's key that took precedence over one of this customer's
        subject keys was deleted or changed."""


class CustomerService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._guards: list[CustomerGuard] = []
        self._plan_members: Callable[[str], list[str]] | None = None

    def add_guard(self, guard: CustomerGuard, *, first: bool = False) -> None:
        """Guards run in order; ``first`` puts this one before those already added."""
        if first:
            self._guards.insert(0, guard)
        else:
            self._guards.append(guard)

    def set_plan_members(self, members: Callable[[str], list[str]]) -> None:
        """The catalog tells which customers have an active subscription on a plan key (the
        list's ``planKey`` filter); without a catalog no customer is on any plan."""
        self._plan_members = members

    def ids_on_plan(self, plan_key: str) -> list[str]:
        return [] if self._plan_members is None else self._plan_members(plan_key)

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    # ------------------------------------------------------------ resolution

    @staticmethod
    def resolve(tx: Tx, id_or_key: str, *, live: bool = True) -> Customer:
        """By id or live key; 404 when neither; with ``live``, 412 for a deleted customer."""
        found = customers_repo.by_id_or_key(tx, id_or_key)
        if found is None:
            raise not_found(id_or_key)
        if live and found.is_deleted:
            raise deleted(found)
        return found

    @staticmethod
    def subjects_in(tx: Tx, customer: Customer) -> tuple[str, ...]:
        """:meth:`subjects_of` inside the caller's transaction."""
        return customers_repo.attributed_subjects(tx, customer)

    def subjects_of(self, customer: Customer | str) -> tuple[str, ...]:
        """The event subjects whose usage is the customer's (key first); () once deleted."""
        with self._db.read() as tx:
            if isinstance(customer, str):
                customer = self.resolve(tx, customer, live=False)
            return self.subjects_in(tx, customer)

    def customer_of_subject(self, subject: str) -> Customer | None:
        """The live customer an event subject belongs to: the one with that key, else the one
        with that subject key."""
        with self._db.read() as tx:
            by_key = customers_repo.live_by_key(tx, subject)
            if by_key is not None:
                return by_key
            owner = customers_repo.subject_owners(tx, [subject]).get(subject)
            return None if owner is None else customers_repo.by_id(tx, owner)

    # ------------------------------------------------------------ reads

    def get(self, id_or_key: str) -> Customer:
        """A deleted customer is readable by its id (with ``deleted_at``)."""
        with self._db.read() as tx:
            return self.resolve(tx, id_or_key, live=False)

    def get_live(self, id_or_key: str) -> Customer:
        with self._db.read() as tx:
            return self.resolve(tx, id_or_key)

    def keys_of(self, ids: Sequence[str]) -> dict[str, str | None]:
        """Customer id → key (None when it has none), for the given ids that exist."""
        with self._db.read() as tx:
            return customers_repo.keys_of(tx, sorted(set(ids)))

    def live_ids_by_keys(self, keys: Sequence[str]) -> list[str]:
        """Ids of the live customers with these keys (unknown keys are skipped)."""
        with self._db.read() as tx:
            found = [customers_repo.live_by_key(tx, k) for k in keys]
        return [c.id for c in found if c is not None]

    def by_key(self, key: str) -> Customer | None:
        with self._db.read() as tx:
            return customers_repo.live_by_key(tx, key)

    def list(self, f: CustomerFilter, paging: Paging) -> tuple[list[Customer], int]:
        with self._db.read() as tx:
            return customers_repo.list_customers(
                tx, f, order_by=paging.order_by, descending=paging.descending,
                limit=paging.limit, offset=paging.offset,
            )  # fmt: skip

    # ------------------------------------------------------------ writes

    def create(self, payload: Any) -> Customer:
        """``payload``: the decoded JSON body, or an already validated :class:`CustomerInput`."""
        inp = payload if isinstance(payload, CustomerInput) else rules.parse_customer_input(payload)
        for attempt in range(RETRIES):
            now = self._now()
            customer = Customer(
                id=new_ulid(to_micros(now) // 1000), name=inp.name, key=inp.key,
                subject_keys=inp.subject_keys, primary_email=inp.primary_email,
                currency=inp.currency, billing_address=inp.billing_address,
                description=inp.description, metadata=inp.metadata, created_at=now,
                updated_at=now,
            )  # fmt: skip
            try:
                with self._db.write() as tx:
                    self._check_conflicts(tx, inp, None)
                    customers_repo.insert(tx, customer)
                    return customer
            except DuplicateKey:
                if attempt == RETRIES - 1:
                    raise self._raced(inp, None) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def replace(self, id_or_key: str, payload: Any) -> Customer:
        """Full replace (omitted optional fields are cleared)."""
        inp = payload if isinstance(payload, CustomerInput) else rules.parse_customer_input(payload)
        self_id: str | None = None
        old_key: str | None = None
        for attempt in range(RETRIES):
            try:
                with self._db.write() as tx:
                    old = self.resolve(tx, id_or_key)
                    self_id, old_key = old.id, old.key
                    self._check_conflicts(tx, inp, old.id, unchanged_key=old.key)
                    before = self.subjects_in(tx, old)
                    updated = customers_repo.replace(tx, old, inp, self._now())
                    after = self.subjects_in(tx, updated)
                    if before != after:
                        self._subjects_changing(tx, updated, after)
                    if old.key is not None and old.key != updated.key:
                        self._key_released(tx, old)
                    return updated
            except DuplicateKey:
                if attempt == RETRIES - 1:
                    raise self._raced(inp, self_id, old_key) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, id_or_key: str) -> None:
        with self._db.write() as tx:
            customer = self.resolve(tx, id_or_key)
            for guard in self._guards:
                guard.before_delete(tx, customer)
            if not customers_repo.soft_delete(tx, customer.id, self._now()):
                raise deleted(customer)
            self._attribution_changed(tx, customer, ())
            self._key_released(tx, customer)

    def _subjects_changing(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        for guard in self._guards:
            guard.subjects_changing(tx, customer, subjects)

    def _attribution_changed(self, tx: Tx, customer: Customer, subjects: Sequence[str]) -> None:
        for guard in self._guards:
            told = getattr(guard, "attribution_changed", None)
            if told is not None:
                told(tx, customer, subjects)

    def _key_released(self, tx: Tx, customer: Customer) -> None:
        """The customer's key stopped being a live key: another customer that has it as a
        subject key now counts its usage."""
        if customer.key is None:
            return
        owner_id = customers_repo.subject_owners(tx, [customer.key]).get(customer.key)
        if owner_id is None or owner_id == customer.id:
            return
        other = customers_repo.by_id(tx, owner_id)
        if other is not None:
            self._attribution_changed(tx, other, self.subjects_in(tx, other))

    # ------------------------------------------------------------ conflicts

    @staticmethod
    def _check_conflicts(
        tx: Tx, inp: CustomerInput, self_id: str | None, unchanged_key: str | None = None
    ) -> None:
        """A replace that keeps the key does not re-check it: another customer may have taken
        it as a subject key meanwhile (allowed; the key's owner wins)."""
        if inp.key is not None and inp.key != unchanged_key:
            owners = customers_repo.subject_owners(tx, [inp.key])
            subject_owner = owners.get(inp.key)
            problem = rules.key_conflict(
                inp.key, self_id, customers_repo.live_by_key(tx, inp.key),
                customers_repo.live_by_id(tx, inp.key),
                None if subject_owner is None else customers_repo.by_id(tx, subject_owner),
            )  # fmt: skip
            if problem is not None:
                raise problem
        problem = rules.subjects_conflict(
            inp.subject_keys, self_id, customers_repo.subject_owners(tx, inp.subject_keys)
        )
        if problem is not None:
            raise problem

    def _raced(
        self, inp: CustomerInput, self_id: str | None, unchanged_key: str | None = None
    ) -> Conflict:
        """A concurrent writer won a unique index: name what it took (fresh transaction: the
        failed one is unusable on PostgreSQL)."""
        with self._db.read() as tx:
            try:
                self._check_conflicts(tx, inp, self_id, unchanged_key)
            except Conflict as exc:
                return exc
        return Conflict("the customer's key or subject keys were taken concurrently", field="key")
