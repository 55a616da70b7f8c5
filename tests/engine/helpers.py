"""Small builders shared by the engine tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from allotment.domain.grants import Grant
from allotment.domain.periods import Recurrence, parse_interval

BASE = datetime(2024, 1, 1, tzinfo=UTC)


def t(minutes: int = 0, *, hours: int = 0, days: int = 0) -> datetime:
    """An instant relative to BASE."""
    return BASE + timedelta(minutes=minutes, hours=hours, days=days)


def grant(
    gid: str,
    amount: int | str | Decimal,
    *,
    priority: int = 1,
    effective_at: datetime = BASE,
    expires_at: datetime | None = None,
    voided_at: datetime | None = None,
    deleted_at: datetime | None = None,
    min_rollover: int | str = 0,
    max_rollover: int | str = 0,
    recurrence: str | None = None,
    anchor: datetime | None = None,
    created_at: datetime | None = None,
) -> Grant:
    rec = None
    if recurrence is not None:
        rec = Recurrence(parse_interval(recurrence), anchor or effective_at)
    return Grant(
        id=gid,
        amount=Decimal(amount),
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        voided_at=voided_at,
        deleted_at=deleted_at,
        created_at=created_at or BASE,
        min_rollover=Decimal(min_rollover),
        max_rollover=Decimal(max_rollover),
        recurrence=rec,
    )


def events_usage(
    events: Iterable[tuple[datetime, int | str | Decimal]],
) -> Callable[[datetime, datetime, datetime], Decimal]:
    """A SUM usage_fn over point events: an event at e counts in [from_, to) iff from_ <= e < to."""
    items = [(at, Decimal(v)) for at, v in events]

    def usage_fn(_period_start: datetime, from_: datetime, to: datetime) -> Decimal:
        return sum((v for at, v in items if from_ <= at < to), Decimal(0))

    return usage_fn
