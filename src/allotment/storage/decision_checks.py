"""Decisions checked at their commit (SQLite's inline authorize): a decision made on the event
loop from cached state names ONE read statement and the row that state answers from; the
group writer runs it inside the decisions' write transaction and writes only the decisions
whose row is still that one (:func:`checked`).

Why there: the transaction is ``BEGIN IMMEDIATE``, so the statement reads the latest commit
of every connection (another process's too) and nothing commits before it ends — at least as
fresh as the same read on the event loop before the decision. And the writer's connection
keeps its page cache from group to group (its own commits do not reset it), where the event
loop's connection had its cache reset by every group commit (WAL mode): the same statement
costs the writer a few µs, the loop 35–45 (docs/api/enforcement.md "Cost")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from allotment.storage.seam import Tx

Check = tuple[str, Sequence[Any], tuple[Any, ...]]
"""A read statement, its parameters, and the row it must return."""


class ReadChanged(Exception):
    """A decision's check returned another row inside its write transaction (what it was
    decided from has changed): nothing of it was written."""


class Checked(Protocol):
    @property
    def check(self) -> Check | None: ...


W = TypeVar("W", bound=Checked)


def checked(
    write: Callable[[Tx, list[W]], None],
) -> Callable[[Tx, list[W]], list[BaseException | None]]:
    """``write`` of the items whose check (if any) returns its row in the caller's
    transaction; per item ``None`` (written) or :class:`ReadChanged` (not written), as
    :class:`~allotment.storage.tx_batcher.TxBatcher` takes it."""

    def run(tx: Tx, batch: list[W]) -> list[BaseException | None]:
        refused: list[BaseException | None] = []
        ok: list[W] = []
        for item in batch:
            check = item.check
            if check is not None and not row_is(tx.one(check[0], check[1]), check):
                refused.append(ReadChanged("the decision's reads changed before its commit"))
                continue
            refused.append(None)
            ok.append(item)
        write(tx, ok)
        return refused

    return run


def row_is(row: Sequence[Any] | None, check: Check) -> bool:
    """Whether ``row`` is the one ``check`` expects."""
    return row is not None and tuple(row) == check[2]
