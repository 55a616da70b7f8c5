"""The catalog as enforcement sees it: :class:`EntitlementSource` over the customers and
their subscriptions (catalog.md §4–§5)."""

from __future__ import annotations

from collections.abc import Sequence

from allotment.domain.enforcement import CustomerEntitlements
from allotment.services.customers import CustomerService


class CatalogEntitlements:
    def __init__(self, customers: CustomerService) -> None:
        self._customers = customers

    def customer_entitlements(self, customer_ref: str) -> CustomerEntitlements:
        customer = self._customers.get_live(customer_ref)
        return CustomerEntitlements(customer.id, customer.key or customer.id, None, {})

    def plans_including(self, feature_reference: str, value: str) -> Sequence[str]:
        return []
