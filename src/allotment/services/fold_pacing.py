"""How the deferred fold keeps pace with ingest (issue 18): when the group-commit writer folds,
and how many events each of its fold steps takes. Pure policy, no IO; the steps themselves are
``EventService._fold_some`` (``services/events.py``) over ``storage/usage_tail.py``."""

from __future__ import annotations

from allotment.domain import limits
from allotment.services.group_commit import GROUP_MAX_EVENTS

FOLD_IDLE_S = 0.25
"""The writer folds the tail (one chunk of :data:`BACKGROUND_FOLD_CHUNK` events at a
time, checking for requests between chunks) once no request has arrived for this long. The
fold is mostly Python and holds the interpreter lock, so folding during a burst of requests
would slow their decoding and acknowledgement; measured in docs/benchmarks.md (issue 18)."""
BACKGROUND_FOLD_CHUNK = 2_000
"""Events of the first background fold transaction after a commit: a request arriving
meanwhile waits at most one. Each further step with no commit in between takes twice as many
(a request arriving during a later step waits for that larger one: only after a burst left a
large tail, which a read would have to fold first anyway),
up to :data:`LAG_FOLD_CHUNK` (:func:`fold_step`): an idle writer catches up in large
transactions, where rows of the same minute, hour and day fold together (on events a minute
apart, 27.5 against 68.6 µs an event for chunks of 20 000 against 2 000; docs/benchmarks.md)."""
FOLD_MAX_LAG = limits.FOLD_MAX_LAG_DEFAULT
"""The default of ``ALLOTMENT_FOLD_MAX_LAG`` (``EventService(fold_max_lag=…)``): above this many
unfolded events the writer folds, after every group commit and even under
load, as many events as the lag exceeds this (at least :data:`BACKGROUND_FOLD_CHUNK`, at most
:data:`LAG_FOLD_CHUNK`, one group's worth): the tail stays within one group of this bound
(on PostgreSQL, whose two writers overlap commits with folds, within two groups a writer)
however long a stream faster than the fold lasts, so what a reader's
:meth:`EventService.settle` may have to fold is bounded too, and a sustained stream is
acknowledged at the rate of append plus fold (back-pressure). A burst up to this size is
acknowledged at the append's full speed and folded after. The writer also folds a chunk
after each group while a reader of this process is folding the tail (:meth:`settle`):
ingest then yields to the fold (``tests/ops/test_read_your_writes.py``)."""
LAG_FOLD_CHUNK = GROUP_MAX_EVENTS
"""Most events one fold step of a lagging writer takes: what the largest group brings."""


def fold_step(unfolded: int, quiet_steps: int = 0, max_lag: int | None = None) -> int:
    """How many events the writer's next background fold step takes with ``unfolded`` events
    waiting, after ``quiet_steps`` steps with no commit since: :data:`BACKGROUND_FOLD_CHUNK`
    doubled per quiet step, or, above ``max_lag`` (:data:`FOLD_MAX_LAG`), at least the excess
    (which brings the lag back to the bound after each group); never more than
    :data:`LAG_FOLD_CHUNK`."""
    bound = FOLD_MAX_LAG if max_lag is None else max_lag
    idle = BACKGROUND_FOLD_CHUNK << min(quiet_steps, 16)
    return min(max(idle, unfolded - bound), max(LAG_FOLD_CHUNK, BACKGROUND_FOLD_CHUNK))
