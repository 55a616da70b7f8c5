"""Who an entitlement belongs to: a subject or a customer (docs/api/customers.md).

A subject owner is its key (``customer_id`` ""); a customer owner is the customer's id
(``subject_key`` ""). Neither part is ever empty for its kind (event subjects and subject
keys are non-empty), so the two kinds never meet. Whose usage counts is decided at read
time: a subject's own, or the customer's key and subject keys as they are then.
"""

from __future__ import annotations

from dataclasses import dataclass

CUSTOMER_SCOPE_PREFIX = "customer:"


@dataclass(frozen=True, slots=True)
class Owner:
    subject_key: str = ""
    customer_id: str = ""

    @staticmethod
    def subject(key: str) -> Owner:
        return Owner(key, "")

    @staticmethod
    def customer(customer_id: str) -> Owner:
        return Owner("", customer_id)

    @property
    def is_customer(self) -> bool:
        return self.customer_id != ""

    @property
    def scope(self) -> str:
        """The owner's name in the value-cache freshness counters (``value_versions``). A
        subject literally named like a customer scope only shares its counter (a spurious
        reload, never a stale answer)."""
        return CUSTOMER_SCOPE_PREFIX + self.customer_id if self.is_customer else self.subject_key

    @staticmethod
    def of_scope(scope: str) -> tuple[Owner, ...]:
        """The owners a freshness-counter scope may name: a subject, or for a name with the
        customer prefix that customer (and the subject literally so named)."""
        if scope.startswith(CUSTOMER_SCOPE_PREFIX) and len(scope) > len(CUSTOMER_SCOPE_PREFIX):
            return (Owner.customer(scope[len(CUSTOMER_SCOPE_PREFIX) :]), Owner.subject(scope))
        return (Owner.subject(scope),)

    def describe(self) -> str:
        return (
            f"customer {self.customer_id}" if self.is_customer else f"subject {self.subject_key!r}"
        )
