"""Exact rate limits: a sliding-window log (pure; no IO, no clock).

A rate-limit feature allows ``limit`` requests per window of ``window_us`` microseconds. The
guarantee is the strict one: **in no interval of length ``window_us`` are more than ``limit``
requests allowed** — not per fixed bucket (which allows ``2 * limit`` across a boundary) and
not per token bucket / GCRA with a burst of ``limit`` (which also allows up to ``2 * limit - 1``
in one window: a full burst, then the refill).

Algorithm (sliding-window log). The state of one (customer, feature) is the log of the
requests it allowed during the last window: ``(at_us, amount)`` pairs, oldest first, several
requests of one microsecond merged into one pair. A request of ``amount`` at ``t`` is allowed
iff ``sum(amount of entries with at > t - window) + amount <= limit``; then ``(t, amount)`` is
appended. Proof of the guarantee: take any interval ``[s, s + window)`` and the last request
allowed in it, at ``t``; every other request allowed in it lies in ``(t - window, t]`` and was
in the log when ``t`` was decided, so their sum plus its amount was at most ``limit``.

Time never runs backwards inside one log: a request is decided at ``max(now, newest entry)``,
so replicas whose clocks differ slightly still keep the guarantee on the log's own timeline.

Memory per (customer, feature): at most ``min(limit, requests in the last window)`` pairs of
two integers (16 bytes each in the stored form's terms, ``limit`` pairs at worst: 600/minute
is at most 600 pairs); entries older than one window are dropped on every decision.

``Retry-After`` is exact: the smallest wait after which the same request would be allowed,
the instant the oldest entries whose amounts cover the excess leave the window.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from operator import itemgetter

Entry = tuple[int, int]
"""``(at_us, amount)``: requests allowed at one instant."""
_amount = itemgetter(1)

WINDOW_US: dict[str, int] = {
    "SECOND": 1_000_000,
    "MINUTE": 60_000_000,
    "HOUR": 3_600_000_000,
    "DAY": 86_400_000_000,
}
"""The ``rate_window`` values of a NUMBER feature and their length."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against one log."""

    allowed: bool
    log: tuple[Entry, ...]
    """The log after the decision: pruned and with the request appended when allowed,
    unchanged when denied (so the newest entry always bounds the instants pruned at)."""
    used: int
    """Requests counted in the window ending at the decision instant (this one included when
    allowed)."""
    remaining: int
    """``limit - used`` (never negative)."""
    reset_us: int
    """Microseconds until ``remaining`` next grows (the oldest counted entry leaves the
    window); 0 when nothing is counted."""
    retry_after_us: int
    """When denied: the exact wait until this request would be allowed; 0 when allowed."""
    at_us: int
    """The instant the request was decided at (``max(now, newest entry)``)."""


def prune(log: tuple[Entry, ...], window_us: int, at_us: int) -> tuple[Entry, ...]:
    """The entries still inside the window ending at ``at_us``: ``at > at_us - window``."""
    i = bisect.bisect_right(log, (at_us - window_us, _MAX))
    return log[i:] if i else log


_MAX = 1 << 62


def decide(
    log: tuple[Entry, ...], *, limit: int, window_us: int, now_us: int, amount: int
) -> Decision:
    """Decide one request of ``amount`` (≥ 1) at ``now_us`` against ``limit`` per window."""
    if amount < 1:
        raise ValueError("amount must be at least 1")
    if window_us < 1:
        raise ValueError("window must be positive")
    at = max(now_us, log[-1][0]) if log else now_us
    live = prune(log, window_us, at)
    used = sum(map(_amount, live))
    if used + amount <= limit:
        if live and live[-1][0] == at:
            grown = (*live[:-1], (at, live[-1][1] + amount))
        else:
            grown = (*live, (at, amount))
        used += amount
        return Decision(
            True, grown, used, max(0, limit - used), _reset(grown, window_us, at), 0, at
        )
    # denied: the log stays unpruned, since pruning at an instant no entry records would let
    # a later request stamped earlier (another replica's clock) see a too-short window
    return Decision(
        False,
        log,
        used,
        max(0, limit - used),
        _reset(live, window_us, at),
        _retry_after(live, limit=limit, window_us=window_us, at_us=at, amount=amount),
        at,
    )


def _reset(live: tuple[Entry, ...], window_us: int, at_us: int) -> int:
    return live[0][0] + window_us - at_us if live else 0


def _retry_after(
    live: tuple[Entry, ...], *, limit: int, window_us: int, at_us: int, amount: int
) -> int:
    """The smallest ``d > 0`` with ``sum(entries at > at_us + d - window) + amount <= limit``.

    ``amount > limit`` can never be allowed; the caller refuses it before deciding (this
    function then answers one whole window)."""
    if amount > limit:
        return window_us
    excess = sum(map(_amount, live)) + amount - limit
    freed = 0
    for entry_at, entry_amount in live:
        freed += entry_amount
        if freed >= excess:
            return entry_at + window_us - at_us
    return window_us  # not reached: the whole log frees at least the excess


def retry_after_seconds(retry_after_us: int) -> int:
    """``Retry-After`` is whole seconds: the exact wait rounded up (never early), at least 1."""
    return max(1, -(-retry_after_us // 1_000_000))


def seconds_up(us: int) -> int:
    """Microseconds as whole seconds, rounded up (0 stays 0)."""
    return -(-us // 1_000_000)
