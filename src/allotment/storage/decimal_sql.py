"""Exact decimal arithmetic inside SQLite.

SQLite has no decimal type: amounts are stored as TEXT and combined through these Python
functions, registered on every connection, so ``SUM`` never goes through a float. Sums keep 60
significant digits (:data:`allotment.domain.decimals.EXACT`), not the default 28.
PostgreSQL stores NUMERIC and defines ``dec_add``/``dec_min``/``dec_max`` in its migration; the
aggregates ``dec_sum``/``dec_minagg``/``dec_maxagg`` become native ``sum``/``min``/``max``.

Each call into Python costs about a microsecond, so the rollups' upserts (``usage_write``,
``meter_rollup``) go through :func:`add_sql`, :func:`min_sql` and :func:`max_sql` on SQLite:
the same results, computed natively when both sides are plain integers (issue 18).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any, cast

from allotment.domain.decimals import EXACT


def _dec(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _text(value: Decimal) -> str:
    return str(value)


def dec_add(a: object, b: object) -> str | None:
    if a is None:
        return None if b is None else _text(_dec(b))
    if b is None:
        return _text(_dec(a))
    return _text(EXACT.add(_dec(a), _dec(b)))


def dec_min(a: object, b: object) -> str | None:
    if a is None or b is None:
        return None if a is None and b is None else _text(_dec(a if b is None else b))
    da, db = _dec(a), _dec(b)
    return _text(da if da <= db else db)


def dec_max(a: object, b: object) -> str | None:
    if a is None or b is None:
        return None if a is None and b is None else _text(_dec(a if b is None else b))
    da, db = _dec(a), _dec(b)
    return _text(da if da >= db else db)


class _DecSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: object) -> None:
        if value is not None:
            self.total = _dec(value) if self.total is None else EXACT.add(self.total, _dec(value))

    def finalize(self) -> str | None:
        return None if self.total is None else _text(self.total)


class _DecMin:
    def __init__(self) -> None:
        self.best: Decimal | None = None

    def step(self, value: object) -> None:
        if value is not None:
            v = _dec(value)
            if self.best is None or v < self.best:
                self.best = v

    def finalize(self) -> str | None:
        return None if self.best is None else _text(self.best)


class _DecMax(_DecMin):
    def step(self, value: object) -> None:
        if value is not None:
            v = _dec(value)
            if self.best is None or v > self.best:
                self.best = v


def plain_int(text_sql: str) -> str:
    """SQL (SQLite) true when the TEXT ``text_sql`` is the plain form of an integer in
    SQLite's 64-bit range, exactly as ``CAST(... AS TEXT)`` prints it — so as ``str`` of its
    Decimal prints it too (no ``2.0``, ``1E+3``, ``-0``, nor a value past 2^63). NULL for
    NULL."""
    return f"{text_sql} = CAST(CAST({text_sql} AS INTEGER) AS TEXT)"


def add_sql(old: str, new: str, old_isum: str, new_isum: str) -> str:
    """``dec_add(old, new)`` for an upsert's conflict path (SQLite), native when both sums
    are plain integers carried by their ``isum`` shadow (``|isum| <= 2^53``, so the native sum
    cannot overflow): the same text ``dec_add`` returns, without a call into Python."""
    return (
        f"CASE WHEN {old_isum} IS NOT NULL AND {new_isum} IS NOT NULL "
        f"AND {old} = CAST({old_isum} AS TEXT) AND {new} = CAST({new_isum} AS TEXT) "
        f"THEN CAST({old_isum} + {new_isum} AS TEXT) ELSE dec_add({old}, {new}) END"
    )


def min_sql(old: str, new: str) -> str:
    """``dec_min(old, new)`` (SQLite), native when both are plain integers (:func:`plain_int`);
    a tie keeps ``old``, as ``dec_min`` does."""
    return (
        f"CASE WHEN {plain_int(old)} AND {plain_int(new)} THEN CASE WHEN "
        f"CAST({new} AS INTEGER) < CAST({old} AS INTEGER) THEN {new} ELSE {old} END "
        f"ELSE dec_min({old}, {new}) END"
    )


def max_sql(old: str, new: str) -> str:
    """``dec_max(old, new)`` (SQLite), native when both are plain integers; a tie keeps
    ``old``, as ``dec_max`` does."""
    return (
        f"CASE WHEN {plain_int(old)} AND {plain_int(new)} THEN CASE WHEN "
        f"CAST({new} AS INTEGER) > CAST({old} AS INTEGER) THEN {new} ELSE {old} END "
        f"ELSE dec_max({old}, {new}) END"
    )


def register(conn: sqlite3.Connection) -> None:
    conn.create_function("dec_add", 2, dec_add, deterministic=True)
    conn.create_function("dec_min", 2, dec_min, deterministic=True)
    conn.create_function("dec_max", 2, dec_max, deterministic=True)
    conn.create_aggregate("dec_sum", 1, cast(Any, _DecSum))
    conn.create_aggregate("dec_minagg", 1, cast(Any, _DecMin))
    conn.create_aggregate("dec_maxagg", 1, cast(Any, _DecMax))
