"""Exact decimal arithmetic inside SQLite.

SQLite has no decimal type: amounts are stored as TEXT and combined through these Python
functions, registered on every connection, so ``SUM`` never goes through a float. Sums keep 60
significant digits (:data:`allotment.domain.decimals.EXACT`), not the default 28.
PostgreSQL stores NUMERIC and defines ``dec_add``/``dec_min``/``dec_max`` in its migration; the
aggregates ``dec_sum``/``dec_minagg``/``dec_maxagg`` become native ``sum``/``min``/``max``.
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


def register(conn: sqlite3.Connection) -> None:
    conn.create_function("dec_add", 2, dec_add, deterministic=True)
    conn.create_function("dec_min", 2, dec_min, deterministic=True)
    conn.create_function("dec_max", 2, dec_max, deterministic=True)
    conn.create_aggregate("dec_sum", 1, cast(Any, _DecSum))
    conn.create_aggregate("dec_minagg", 1, cast(Any, _DecMin))
    conn.create_aggregate("dec_maxagg", 1, cast(Any, _DecMax))
