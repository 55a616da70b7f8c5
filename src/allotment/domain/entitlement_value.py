"""What a value check answers, whichever path computed it (the value cache or the plain read
of ``EntitlementService``); both build it, the HTTP layer renders it."""

from __future__ import annotations

from dataclasses import dataclass

from allotment.domain.entitlement_math import MeteredValue


@dataclass(frozen=True, slots=True)
class ValueView:
    """``metered`` is None for static/boolean entitlements and inactive ones."""

    has_access: bool
    metered: MeteredValue | None = None
    config: str | None = None
