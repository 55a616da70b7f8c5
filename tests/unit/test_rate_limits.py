"""The sliding-window log against a naive model that keeps every allowed request and checks
every window (Hypothesis), plus the exact Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allotment.domain.rate_limits import (
    WINDOW_US,
    decide,
    prune,
    retry_after_seconds,
    seconds_up,
)


def naive_allows(
    history: list[tuple[int, int]], limit: int, window: int, t: int, amount: int
) -> bool:
    """Allowed iff no window of length ``window`` would then hold more than ``limit``: the
    only windows a new request at ``t`` (latest so far) can break are the ones ending at it."""
    trial = [*history, (t, amount)]
    return all(sum(a for at, a in trial if end - window < at <= end) <= limit for end, _ in trial)


def every_window_holds(history: list[tuple[int, int]], limit: int, window: int) -> bool:
    """Check every half-open interval [s, s + window) whose start is an allowed instant
    (the densest intervals start at a request)."""
    return all(sum(a for at, a in history if s <= at < s + window) <= limit for s, _ in history)


steps = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 4)), min_size=1, max_size=60)


@given(limit=st.integers(1, 8), window=st.integers(1, 30), steps=steps)
def test_log_matches_naive_model_and_no_window_exceeds_limit(
    limit: int, window: int, steps: list[tuple[int, int]]
) -> None:
    log: tuple[tuple[int, int], ...] = ()
    history: list[tuple[int, int]] = []
    now = 0
    for gap, amount in steps:
        now += gap
        d = decide(log, limit=limit, window_us=window, now_us=now, amount=amount)
        assert d.at_us == now
        assert d.allowed == naive_allows(history, limit, window, now, amount)
        if d.allowed:
            history.append((now, amount))
            assert d.retry_after_us == 0
        else:
            assert amount <= limit or d.retry_after_us == window
            if amount <= limit:
                # exact: allowed after exactly retry_after, not one microsecond earlier
                wait = d.retry_after_us
                assert wait > 0
                assert naive_allows(history, limit, window, now + wait, amount)
                assert not naive_allows(history, limit, window, now + wait - 1, amount)
        log = d.log
        assert every_window_holds(history, limit, window)
        counted = sum(a for at, a in history if now - window < at <= now)
        assert d.used == counted
        assert d.remaining == max(0, limit - counted)
        assert len(log) <= limit  # memory: at most `limit` entries
        if d.allowed:
            assert all(now - window < at <= now for at, _ in log)


@given(limit=st.integers(1, 5), window=st.integers(2, 20), steps=steps)
def test_clock_going_backwards_keeps_the_guarantee(
    limit: int, window: int, steps: list[tuple[int, int]]
) -> None:
    """Replicas' clocks differ: a request stamped earlier than the newest entry is decided at
    the newest entry's instant, so the log's own timeline never breaks the limit."""
    log: tuple[tuple[int, int], ...] = ()
    history: list[tuple[int, int]] = []
    now = 100
    for i, (gap, amount) in enumerate(steps):
        stamp = now - gap if i % 2 else now + gap
        now = max(now, stamp)
        d = decide(log, limit=limit, window_us=window, now_us=stamp, amount=amount)
        if d.allowed:
            history.append((d.at_us, amount))
        log = d.log
        assert every_window_holds(history, limit, window)


def test_fixed_bucket_boundary_burst_is_refused() -> None:
    """60/minute: 60 at 0:59.9 and 60 more at 1:00.1 would pass fixed buckets; not here."""
    w = WINDOW_US["MINUTE"]
    log: tuple[tuple[int, int], ...] = ()
    for _ in range(60):
        d = decide(log, limit=60, window_us=w, now_us=59_900_000, amount=1)
        assert d.allowed
        log = d.log
    assert log == ((59_900_000, 60),)
    d = decide(log, limit=60, window_us=w, now_us=60_100_000, amount=1)
    assert not d.allowed
    assert d.retry_after_us == 59_900_000 + w - 60_100_000
    assert retry_after_seconds(d.retry_after_us) == 60
    assert d.remaining == 0
    assert d.reset_us == d.retry_after_us
    d = decide(log, limit=60, window_us=w, now_us=59_900_000 + w, amount=60)
    assert d.allowed


def test_partial_free_retry_after_counts_amounts() -> None:
    log = ((0, 2), (10, 3))
    d = decide(log, limit=5, window_us=100, now_us=50, amount=3)
    assert not d.allowed
    assert d.retry_after_us == 60  # (10, 3) must leave too: 2 freed at 100 is not enough
    d = decide(log, limit=5, window_us=100, now_us=50, amount=2)
    assert d.retry_after_us == 50  # (0, 2) leaves at 100


def test_amount_over_limit_and_bad_arguments() -> None:
    d = decide((), limit=2, window_us=10, now_us=0, amount=3)
    assert not d.allowed
    assert d.retry_after_us == 10
    with pytest.raises(ValueError):
        decide((), limit=2, window_us=10, now_us=0, amount=0)
    with pytest.raises(ValueError):
        decide((), limit=2, window_us=0, now_us=0, amount=1)


def test_prune_and_seconds() -> None:
    assert prune(((1, 1), (5, 1)), 4, 5) == ((5, 1),)
    assert prune(((2, 1), (5, 1)), 4, 5) == ((2, 1), (5, 1))
    assert retry_after_seconds(1) == 1
    assert retry_after_seconds(1_000_000) == 1
    assert retry_after_seconds(1_000_001) == 2
    assert seconds_up(0) == 0
