"""Allotment's Python client: entitlements, authorize, reservations, batched ingest, local
caches and budget leases, sync and async from one implementation; ASGI middleware in
:mod:`allotment_client.middleware`."""

from allotment_client._core import (
    Authorization,
    Entitlement,
    Entitlements,
    LeaseSettings,
    RateLimitInfo,
)
from allotment_client.client import Allotment, AsyncAllotment, Reservation
from allotment_client.errors import (
    AllotmentError,
    ApiError,
    BudgetExhausted,
    Denied,
    EnumValueNotAllowed,
    NotEntitled,
    RateLimited,
    SwitchOff,
)

__all__ = [
    "Allotment",
    "AllotmentError",
    "ApiError",
    "AsyncAllotment",
    "Authorization",
    "BudgetExhausted",
    "Denied",
    "Entitlement",
    "Entitlements",
    "EnumValueNotAllowed",
    "LeaseSettings",
    "NotEntitled",
    "RateLimitInfo",
    "RateLimited",
    "Reservation",
    "SwitchOff",
]
