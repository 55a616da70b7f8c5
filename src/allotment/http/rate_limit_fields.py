"""The rate-limit response fields: ``Retry-After`` and the ``RateLimit-Policy`` / ``RateLimit``
fields of the IETF httpapi draft (draft-ietf-httpapi-ratelimit-headers: Structured Field
lists, one member per policy, named by the feature reference)::

    RateLimit-Policy: "requests_per_minute";q=600;w=60
    RateLimit: "requests_per_minute";r=0;t=12

``q`` is the limit per window, ``w`` the window in seconds, ``r`` the requests left now and
``t`` the seconds until ``r`` next grows (the oldest counted request leaves the window).
"""

from __future__ import annotations

from collections.abc import Sequence

from allotment.domain.enforcement import RateLimited, RateState
from allotment.domain.errors import DomainError
from allotment.domain.rate_limits import retry_after_seconds, seconds_up


def _name(state: RateState) -> str:
    return '"' + state.feature_reference.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rate_limit_headers(states: Sequence[RateState]) -> dict[str, str]:
    if not states:
        return {}
    return {
        "RateLimit-Policy": ", ".join(
            f"{_name(s)};q={s.limit};w={s.window_us // 1_000_000}" for s in states
        ),
        "RateLimit": ", ".join(
            f"{_name(s)};r={s.remaining};t={seconds_up(s.reset_us)}" for s in states
        ),
    }


def problem_headers(exc: DomainError) -> dict[str, str] | None:
    """Headers a problem carries: a 429's ``Retry-After`` (the exact wait, rounded up to whole
    seconds) and its rate-limit fields."""
    if isinstance(exc, RateLimited):
        return {
            "Retry-After": str(retry_after_seconds(exc.retry_after_us)),
            **rate_limit_headers(exc.states),
        }
    return None
