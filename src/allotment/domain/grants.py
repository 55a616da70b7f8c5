"""Grants: a time-bounded allowance that usage burns down (engine-semantics §4).

Invariants of a ``Grant`` (checked on construction):

* every instant is aware UTC and **floored to the minute** (``effective_at``, ``expires_at``,
  ``voided_at``, ``deleted_at`` and the recurrence anchor). This one rule, applied on input,
  is our fix for OpenMeter's weak spot W5: a grant deleted at 12:00:30 is inactive from 12:00
  on, both for phase boundaries and for activity. ``created_at`` is kept exact: it only
  breaks ties in the burn order.
* ``amount > 0`` and ``0 <= min_rollover <= max_rollover`` (W8: we reject ``min > max``).

Validation of client input raises ``InvalidInput`` with ``field`` set to the wire name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from allotment.domain import limits
from allotment.domain.errors import InvalidInput, LimitExceeded, check
from allotment.domain.periods import Recurrence, period_at
from allotment.domain.timeutil import floor_minute

PRIORITY_MIN = 0
PRIORITY_MAX = 255
DEFAULT_GRANT_PRIORITY = 1
"""Priority of a grant created without one. OpenMeter uses 0 (W9), which outranks the
documented range 1..255; we use the documented minimum, 1."""
DEFAULT_ISSUE_AFTER_RESET_PRIORITY = 1
EXPIRATION_COUNT_MIN = 1
EXPIRATION_COUNT_MAX = 1000
ZERO = Decimal(0)


def _floor_opt(at: datetime | None) -> datetime | None:
    return None if at is None else floor_minute(at)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    amount: Decimal
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    voided_at: datetime | None = None
    deleted_at: datetime | None = None
    min_rollover: Decimal = ZERO
    max_rollover: Decimal = ZERO
    recurrence: Recurrence | None = None

    def __post_init__(self) -> None:
        for name in ("effective_at", "expires_at", "voided_at", "deleted_at", "created_at"):
            value = getattr(self, name)
            check(value is None or value.utcoffset() is not None, f"grant {name} must be aware")
        object.__setattr__(self, "effective_at", floor_minute(self.effective_at))
        object.__setattr__(self, "expires_at", _floor_opt(self.expires_at))
        object.__setattr__(self, "voided_at", _floor_opt(self.voided_at))
        object.__setattr__(self, "deleted_at", _floor_opt(self.deleted_at))
        if self.recurrence is not None:
            anchor = floor_minute(self.recurrence.anchor)
            object.__setattr__(self, "recurrence", Recurrence(self.recurrence.interval, anchor))
        check(isinstance(self.amount, Decimal), "grant amount must be a Decimal")
        check(self.amount > 0, f"grant {self.id}: amount must be positive")
        check(PRIORITY_MIN <= self.priority <= PRIORITY_MAX, f"grant {self.id}: bad priority")
        check(
            ZERO <= self.min_rollover <= self.max_rollover,
            f"grant {self.id}: need 0 <= minRollover <= maxRollover",
        )

    @property
    def end(self) -> datetime | None:
        """The earliest of expiry, void and deletion: the grant is inactive from here on."""
        ends = [t for t in (self.expires_at, self.voided_at, self.deleted_at) if t is not None]
        return min(ends) if ends else None

    def active_at(self, at: datetime) -> bool:
        """Half-open activity: ``effective_at <= at < end``."""
        end = self.end
        return self.effective_at <= at and (end is None or at < end)

    def recurs_at(self, at: datetime) -> bool:
        """True when ``at`` is a recurrence instant at which the grant is active."""
        if self.recurrence is None or not self.active_at(at):
            return False
        return period_at(self.recurrence, at).start == at


def burn_order_key(grant: Grant) -> tuple[int, int, int, datetime, str]:
    """Sort key of the burn order (§4.7): lower priority number first; then grants with an
    expiry before those without, earlier expiry first (whole Unix seconds; void and delete
    times do not count); then ``created_at``; then ``id``. It does not depend on time."""
    if grant.expires_at is None:
        has_expiry, expiry_seconds = 1, 0
    else:
        has_expiry, expiry_seconds = 0, int(grant.expires_at.timestamp())
    return (grant.priority, has_expiry, expiry_seconds, grant.created_at, grant.id)


def in_burn_order(grants: list[Grant] | tuple[Grant, ...]) -> list[Grant]:
    return sorted(grants, key=burn_order_key)


def rollover_balance(grant: Grant, balance: Decimal) -> Decimal:
    """Balance after a reset: ``min(max_rollover, max(min_rollover, balance))`` (§4.6).

    ``min_rollover`` may exceed the current balance (and even the amount): it refills.
    """
    return min(grant.max_rollover, max(grant.min_rollover, balance))


# --------------------------------------------------------------------------------------------
# Validation of client input (wire field names)
# --------------------------------------------------------------------------------------------


def validate_amount(amount: Decimal, field: str = "amount") -> Decimal:
    if not amount.is_finite() or amount <= 0:
        raise InvalidInput("grant amount must be positive", field=field)
    return amount


def validate_priority(priority: int | None, field: str = "priority") -> int:
    """Missing → ``DEFAULT_GRANT_PRIORITY``; otherwise a whole number 0..255."""
    if priority is None:
        return DEFAULT_GRANT_PRIORITY
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidInput(
            f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}", field=field
        )
    return priority


def validate_rollover(
    min_rollover: Decimal | None, max_rollover: Decimal | None
) -> tuple[Decimal, Decimal]:
    """Defaults 0/0 (v1). Both must be finite and >= 0, and min <= max (W8)."""
    low = ZERO if min_rollover is None else min_rollover
    high = ZERO if max_rollover is None else max_rollover
    if not low.is_finite() or low < 0:
        raise InvalidInput("minRolloverAmount must be >= 0", field="minRolloverAmount")
    if not high.is_finite() or high < 0:
        raise InvalidInput("maxRolloverAmount must be >= 0", field="maxRolloverAmount")
    if low > high:
        raise InvalidInput(
            "maxRolloverAmount must be >= minRolloverAmount", field="maxRolloverAmount"
        )
    return low, high


def validate_expiration_count(count: int, field: str = "expiration.count") -> int:
    if not EXPIRATION_COUNT_MIN <= count <= EXPIRATION_COUNT_MAX:
        raise InvalidInput(
            f"expiration count must be between {EXPIRATION_COUNT_MIN} and {EXPIRATION_COUNT_MAX}",
            field=field,
        )
    return count


def validate_grant_count(existing: int) -> None:
    """One more grant must keep the entitlement within ``GRANTS_PER_ENTITLEMENT_MAX``."""
    if existing + 1 > limits.GRANTS_PER_ENTITLEMENT_MAX:
        raise LimitExceeded(
            f"an entitlement may have at most {limits.GRANTS_PER_ENTITLEMENT_MAX} grants "
            "(GRANTS_PER_ENTITLEMENT_MAX)"
        )
