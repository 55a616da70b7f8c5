"""Exact sums of rollup amounts in SQL, in the cheapest form that is exact.

Rollup rows keep an integer part (``isum``, summed natively by both engines) beside a
decimal one (``sum``, summed by ``dec_sum`` on SQLite); every usage read that adds amounts
selects :func:`sum_columns`, runs through :func:`execute_summing` and reads the result back
with :func:`exact_sum`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from allotment.domain.decimals import EXACT
from allotment.storage.database import Tx, dec

_ZERO = Decimal(0)

SumMode = Literal["native", "fast", "exact"]


def execute_summing(
    tx: Tx, statement: Callable[[SumMode], tuple[str, list[Any]]], rest: int
) -> list[Any]:
    """Run a statement whose sums come from :func:`sum_columns` (column ``rest`` holds the
    decimal rest) in the cheapest form that is exact.

    SQLite: first ``native`` (integer sums only, no Python aggregate at all; the rest column
    flags groups that hold a non-integer sum); if any group is flagged, ``fast``; if SQLite's
    integer ``sum()`` overflowed, ``exact`` (decimals only). PostgreSQL's sums are native in
    every form: ``fast`` at once.
    """
    try:
        if tx.dialect == "sqlite":
            rows = tx.execute(*statement("native"))
            if all(r[rest] is None for r in rows):
                return rows
        return tx.execute(*statement("fast"))
    except sqlite3.OperationalError as exc:
        if not _is_overflow(exc):
            raise
        return tx.execute(*statement("exact"))


WIDE = EXACT
"""Additions of partial sums keep 60 significant digits, like ingest (the default keeps 28)."""


def _is_overflow(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "integer overflow" in str(exc).lower()


def sum_columns(mode: SumMode, alias: str = "") -> str:
    """Two columns whose total is the exact sum: ``sum(isum), dec_sum(sum of the rest)``
    (``fast``); ``NULL, dec_sum(sum)`` (``exact``, after SQLite reported an integer overflow);
    or ``sum(isum), flag`` (``native``: no Python aggregate; ``flag`` is non-NULL when the group
    holds a sum that is not an integer, and then the caller runs the ``fast`` form)."""
    if mode == "native":
        return (
            f"sum({alias}isum), CASE WHEN count(*) FILTER "
            f"(WHERE {alias}isum IS NULL AND {alias}sum IS NOT NULL) > 0 THEN 'decimal' END"
        )
    if mode == "fast":
        # FILTER, not CASE: SQLite then never calls the Python aggregate for integer rows
        return f"sum({alias}isum), dec_sum({alias}sum) FILTER (WHERE {alias}isum IS NULL)"
    return f"NULL, dec_sum({alias}sum)"


def exact_sum(isum: Any, rest: Any) -> Decimal | None:
    """The exact total of ``sum_columns`` (None when no row had a value)."""
    if isum is None and rest is None:
        return None
    total = _ZERO if rest is None else dec(rest)
    return WIDE.add(total, int(isum)) if isum is not None else total
