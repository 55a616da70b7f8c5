"""The ports the enforcement service receives (:mod:`allotment.services.enforcement`): what a
customer is entitled to (:class:`EntitlementSource`, satisfied by
:mod:`allotment.services.enforcement_source`) and the ingest door its commits record usage
through (:class:`UsageRecorder`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from allotment.domain import enforcement as rules
from allotment.domain.events import CloudEvent
from allotment.storage.decision_checks import Check
from allotment.storage.read_ahead import ReadAhead


class EntitlementSource(Protocol):
    """What a customer is entitled to now (the catalog service satisfies it)."""

    def customer_entitlements(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str] | None = None,
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> rules.CustomerEntitlements:
        """Effective values of the customer's active subscription, budgets with their current
        balance *before* held reservations; :class:`NotFound` for an unknown customer.
        ``customer``: its :meth:`identify` answer when known (saves a read); ``reserving``:
        the budgets whose meter
        (event type, value path) the answer must carry; ``features``: the features the
        answer must hold (the others may be left out, unread), all when ``None``."""
        ...

    def cached_customer_entitlements(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str] | None = None,
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> rules.CustomerEntitlements | None:
        """:meth:`customer_entitlements` when cached and one-row reads can answer it (what an
        event loop may do), else ``None``."""
        ...

    def entitlements_ahead(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str],
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> ReadAhead[rules.CustomerEntitlements] | None:
        """:meth:`cached_customer_entitlements` of an :meth:`identify_cached` answer as ONE
        read the caller sends (PostgreSQL: with the keys), its row answering (``None``: read
        the long way); ``None`` when it cannot be one read."""
        ...

    def entitlements_unchecked(
        self,
        customer_ref: str,
        *,
        customer: tuple[str, str],
        reserving: Collection[str] = (),
        features: Collection[str] | None = None,
    ) -> tuple[rules.CustomerEntitlements | None, Check | None]:
        """:meth:`cached_customer_entitlements` with its one read not yet run: the answer
        and the check (the read and the row it must return) the caller runs before trusting
        it; without such a read, :meth:`cached_customer_entitlements` and no check."""
        ...

    def plans_including(self, feature_reference: str, value: str) -> Sequence[str]:
        """References of the active plans whose value of the ENUM feature includes ``value``."""
        ...

    def identify(self, customer_ref: str) -> tuple[str, str]:
        """``(id, reference)`` of the live customer named by its reference or id
        (:class:`NotFound` otherwise)."""
        ...

    def identify_cached(self, customer_ref: str) -> tuple[str, str] | None:
        """:meth:`identify` from what is cached, without a read, when it can be checked
        later: handed as ``customer=`` to :meth:`cached_customer_entitlements`, which
        answers ``None`` when it no longer holds. ``None`` when not cached."""
        ...


class UsageRecorder(Protocol):
    def ingest(self, events: Sequence[CloudEvent]) -> int: ...
