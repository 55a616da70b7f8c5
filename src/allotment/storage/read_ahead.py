"""A read sent ahead: one read statement a caller runs where it chooses (PostgreSQL's
enforcement session sends it in the round trip that takes the decision's keys), and what its
first row answers (:meth:`ReadAhead.answer`: ``None`` when the row says the reader's cached
state no longer holds, so that the caller reads the long way).

A read may also name the row it ``expects`` (the one its cached state answers from): a caller
may then act on :meth:`ReadAhead.optimistic` first and run the statement later, where it
is cheaper, trusting the action only if the row is that one (SQLite's inline decisions: the
group writer runs it inside the decisions' write transaction,
:mod:`allotment.storage.decision_checks`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class ReadAhead(Generic[T]):
    sql: str
    """One read statement in the shared dialect, returning one row."""
    params: Sequence[Any]
    finish: Callable[[Sequence[Any]], T | None]
    expects: tuple[Any, ...] | None = None
    """The row whose answer is the cached state's (``None``: not known); any other row
    answers ``None`` or another value."""

    def optimistic(self) -> T | None:
        """What the :attr:`expects` row answers (``None`` when not known): the answer to use
        before the statement has run, valid only if it then returns that row."""
        return None if self.expects is None else self.finish(self.expects)

    def answer(self, row: Sequence[Any] | None) -> T | None:
        """What the statement's row answers (``None`` without a row)."""
        return None if row is None else self.finish(row)

    def then(self, more: Callable[[T], U | None]) -> ReadAhead[U]:
        """The same read, its answer passed on through ``more``."""
        finish = self.finish

        def chained(row: Sequence[Any]) -> U | None:
            first = finish(row)
            return None if first is None else more(first)

        return ReadAhead(self.sql, self.params, chained, self.expects)
