"""Time helpers: RFC 3339 in and out, minute alignment, epoch microseconds.

All instants are aware and in UTC. Storage keeps instants as integer microseconds since the
Unix epoch (exact, sortable, the same on SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from allotment.domain import limits
from allotment.domain.errors import InvalidInput

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MIN = datetime(limits.TIME_MIN_YEAR, 1, 1, tzinfo=UTC)
"""The earliest accepted instant (inclusive)."""
TIME_MAX = datetime(limits.TIME_MAX_YEAR, 1, 1, tzinfo=UTC)
"""Accepted instants lie before this one."""
TIME_MIN_US = (TIME_MIN - EPOCH) // timedelta(microseconds=1)
TIME_MAX_US = (TIME_MAX - EPOCH) // timedelta(microseconds=1)
_RANGE_RULE = (
    f"must lie in [{limits.TIME_MIN_YEAR}-01-01T00:00:00Z, {limits.TIME_MAX_YEAR}-01-01T00:00:00Z)"
    " (TIME_MIN_YEAR, TIME_MAX_YEAR)"
)
MINUTE = timedelta(minutes=1)
_US_PER_MINUTE = 60_000_000

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


class TimeOutOfRange(InvalidInput):
    """A well-formed date-time outside the accepted range (``TIME_MIN``..``TIME_MAX``)."""


def parse_rfc3339(value: str, field: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset; fractions beyond microseconds are cut."""
    m = _RFC3339.match(value)
    if m is None:
        raise InvalidInput(f"{field}: {value!r} is not an RFC 3339 date-time", field=field)
    year, month, day, hour, minute, second, frac, offset = m.groups()
    micros = int((frac[1:] + "000000")[:6]) if frac else 0
    try:
        if offset in ("Z", "z"):
            tz = UTC
        else:
            sign = 1 if offset[0] == "+" else -1
            hours, mins = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or mins > 59:
                raise ValueError("offset out of range")
            from datetime import timezone

            tz = timezone(sign * timedelta(hours=hours, minutes=mins))
        sec = int(second)
        leap = sec == 60
        dt = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            59 if leap else sec,
            micros,
            tzinfo=tz,
        )
        if leap:
            dt += timedelta(seconds=1)
        dt = dt.astimezone(UTC)
    except ValueError as exc:
        raise InvalidInput(
            f"{field}: {value!r} is not a valid date-time ({exc})", field=field
        ) from exc
    except OverflowError:  # the offset or a leap second pushed it out of years 1..9999
        raise TimeOutOfRange(f"{field}: {value!r} {_RANGE_RULE}", field=field) from None
    if not TIME_MIN <= dt < TIME_MAX:
        raise TimeOutOfRange(f"{field}: {value!r} {_RANGE_RULE}", field=field)
    return dt


def check_instant(at: datetime, field: str) -> datetime:
    """``at`` (aware) in UTC when it lies in the accepted range, else a 400 naming ``field``."""
    at = require_aware(at, field)
    if not TIME_MIN <= at < TIME_MAX:
        raise TimeOutOfRange(f"{field}: {format_rfc3339(at)} {_RANGE_RULE}", field=field)
    return at


def format_rfc3339(at: datetime) -> str:
    """UTC, ``Z`` suffix, fraction trimmed of trailing zeros (Go's time.Time JSON form)."""
    at = at.astimezone(UTC)
    base = (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}:{at.second:02d}"
    )
    if at.microsecond:
        base += ("." + f"{at.microsecond:06d}").rstrip("0")
    return base + "Z"


def require_aware(at: datetime, field: str = "time") -> datetime:
    if at.tzinfo is None:
        raise InvalidInput(f"{field}: a time zone offset is required", field=field)
    return at.astimezone(UTC)


def to_micros(at: datetime) -> int:
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def ceil_minute(at: datetime) -> datetime:
    floored = floor_minute(at)
    return floored if floored == at else floored + MINUTE


def floor_minute_us(us: int) -> int:
    return us - us % _US_PER_MINUTE
