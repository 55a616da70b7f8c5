"""Tumbling query windows (MINUTE, HOUR, DAY, MONTH) in an IANA time zone.

* MINUTE windows are UTC minutes. HOUR windows start on the zone's local hour (``:30`` UTC in
  ``Asia/Kolkata``) and last exactly one hour. DAY and MONTH windows run from local midnight
  (of the day / of the 1st) to the next one, so a DAY window on a DST change day lasts 23 h or
  25 h, and a MONTH window follows the local calendar.
* :class:`WindowGrid` lists every window boundary of a range once; an instant belongs to the
  window found by binary search, so the windows of one query never overlap or leave gaps.
* :func:`window_count` is exact and cheap (no listing), so a query that would produce more
  than :data:`~allotment.domain.limits.QUERY_WINDOWS_MAX` windows is refused up front.
* :func:`total_window` is the window of a query without ``windowSize`` (contract §3.3).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from allotment.domain import limits
from allotment.domain.errors import InvalidInput, LimitExceeded, check
from allotment.domain.timeutil import MINUTE, from_micros, to_micros

HOUR = timedelta(hours=1)
_ONE_US = timedelta(microseconds=1)


class WindowSize(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


def parse_window_size(value: object, field: str = "windowSize") -> WindowSize:
    try:
        return WindowSize(str(value))
    except ValueError:
        raise InvalidInput(
            f"{field}: {value!r} is not one of {', '.join(WindowSize)}", field=field
        ) from None


def parse_time_zone(name: object, field: str = "windowTimeZone") -> tzinfo:
    """An IANA zone name (``UTC`` when empty) as a tzinfo; an unknown name is a 400."""
    if name is None or name == "":
        return UTC
    if not isinstance(name, str):
        raise InvalidInput(f"{field}: must be an IANA time zone name", field=field)
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(f"{field}: unknown time zone {name!r}", field=field) from None


def _local_midnight(day: date, tz: tzinfo) -> datetime:
    """The first instant of a local calendar day (fold=0 handles a midnight DST change)."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _local_date(at: datetime, tz: tzinfo) -> date:
    return at.astimezone(tz).date()


def _month_after(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def floor_window(at: datetime, size: WindowSize, tz: tzinfo) -> datetime:
    """The start of the window containing ``at`` (aware UTC)."""
    at = at.astimezone(UTC)
    if size is WindowSize.MINUTE:
        return at.replace(second=0, microsecond=0)
    if size is WindowSize.HOUR:
        offset = at.astimezone(tz).utcoffset() or timedelta(0)
        local = at + offset
        return local.replace(minute=0, second=0, microsecond=0) - offset
    day = _local_date(at, tz)
    if size is WindowSize.MONTH:
        day = day.replace(day=1)
    start = _local_midnight(day, tz)
    return start if start <= at else _local_midnight(day - timedelta(days=1), tz)


def next_window(start: datetime, size: WindowSize, tz: tzinfo) -> datetime:
    """The end of the window that starts at ``start`` (the start of the next one)."""
    if size is WindowSize.MINUTE:
        return start + MINUTE
    if size is WindowSize.HOUR:
        return start + HOUR
    day = _local_date(start, tz)
    nxt = day + timedelta(days=1) if size is WindowSize.DAY else _month_after(day.replace(day=1))
    return _local_midnight(nxt, tz)


def window_count(start: datetime, end: datetime, size: WindowSize, tz: tzinfo) -> int:
    """How many windows cover ``[start, end)`` (0 when empty), without listing them."""
    if end <= start:
        return 0
    first = floor_window(start, size, tz)
    if size in (WindowSize.MINUTE, WindowSize.HOUR):
        step = MINUTE if size is WindowSize.MINUTE else HOUR
        return -((first - end) // step)
    a, b = _local_date(first, tz), _local_date(end - _ONE_US, tz)
    if size is WindowSize.DAY:
        return (b - a).days + 1
    return (b.year - a.year) * 12 + (b.month - a.month) + 1


def check_window_count(start: datetime, end: datetime, size: WindowSize, tz: tzinfo) -> int:
    """:func:`window_count`, refusing more than ``QUERY_WINDOWS_MAX`` windows (400)."""
    count = window_count(start, end, size, tz)
    if count > limits.QUERY_WINDOWS_MAX:
        raise LimitExceeded(
            f"windowSize: the query would produce {count} {size} windows; the limit "
            f"QUERY_WINDOWS_MAX is {limits.QUERY_WINDOWS_MAX} (narrow from/to or use a larger "
            "windowSize)",
            field="windowSize",
        )
    return count


@dataclass(frozen=True)
class WindowGrid:
    """The boundaries (epoch µs) of consecutive windows; window ``i`` is
    ``[bounds[i], bounds[i + 1])``."""

    bounds: tuple[int, ...]

    @classmethod
    def build(cls, start: datetime, end: datetime, size: WindowSize, tz: tzinfo) -> WindowGrid:
        """Windows covering ``[start, end)``; call :func:`check_window_count` first."""
        check(start < end, "window grid: empty range")
        at = floor_window(start, size, tz)
        if size in (WindowSize.MINUTE, WindowSize.HOUR):
            step = 60_000_000 if size is WindowSize.MINUTE else 3_600_000_000
            first, n = to_micros(at), window_count(start, end, size, tz)
            return cls(tuple(range(first, first + (n + 1) * step, step)))
        bounds = [to_micros(at)]
        while at < end:
            at = next_window(at, size, tz)
            bounds.append(to_micros(at))
        return cls(tuple(bounds))

    def index(self, us: int) -> int | None:
        """The window holding instant ``us``, or None outside the grid."""
        i = bisect_right(self.bounds, us) - 1
        return i if 0 <= i < len(self.bounds) - 1 else None

    def window(self, i: int) -> tuple[datetime, datetime]:
        return from_micros(self.bounds[i]), from_micros(self.bounds[i + 1])


def total_window(
    from_: datetime | None,
    to: datetime | None,
    first_minute: datetime | None,
    last_minute: datetime | None,
) -> tuple[datetime, datetime] | None:
    """The one window of a query without ``windowSize`` (contract §3.3).

    ``windowStart`` = ``from`` if given, else the earliest usage minute; ``windowEnd`` = ``to``
    if given, else the latest usage minute plus one minute. None when a bound is unknown
    (no usage in the range).
    """
    start = from_ if from_ is not None else first_minute
    end = to if to is not None else (None if last_minute is None else last_minute + MINUTE)
    if start is None or end is None:
        return None
    return start, end
