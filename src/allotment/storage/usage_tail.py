"""The unfolded tail of the ``events`` table: the deferred fold (migration 0750).

An ingest transaction only appends the new events (dedup on ``(source, id)``) and commits;
they are folded into the rollups and the usage marks later, in fold transactions of their
own (:func:`fold_pending`), which record what they folded in the same transaction as the
upserts, so a crash at any moment folds every stored event exactly once:

* SQLite: behind the watermark ``usage_fold_state.seq``. SQLite has one writer at a time, so
  ``seq`` order is commit order and the events above the watermark are exactly the unfolded
  ones; a fold reads them in ``seq`` order and advances the watermark.
* PostgreSQL: a smaller ``seq`` may commit after a larger one, so no watermark can be
  trusted. Each ingest statement queues the ``seq`` values it stored as ONE row of
  ``usage_fold_batches`` (an ``int8multirange``, migration 0860; same transaction,
  ``events_repo.insert_new``). A fold locks the oldest rows (``FOR UPDATE``, or ``SKIP
  LOCKED`` for background folds, so two folds never take the same rows), chosen so that their
  values add up to about its chunk (the window is chosen before the lock, so a second
  background fold running beside one folds nothing that round rather than the next rows: the
  fold's throughput across replicas is one process's; reads stay exact, they wait); it
  takes the smallest values up to the chunk, deletes
  each row it took whole and rewrites the one it took part of to the rest, and folds the
  events of the values taken. A fold first takes the meters lock shared, as ingest did
  (``meters_repo.lock_for_ingest``), so a meter write never interleaves with one.

Before folding anything, a fold records the ``(source, id)`` of every event it takes in
``event_keys`` (migration 0760: the exact, unexpiring dedup record; ``seq`` = the one event
that counts) and deletes the events whose key is already there with another ``seq``: the
duplicates that carried another time, which the ingest's time-led unique index could not
refuse (``events_repo.insert_new``). Keys are inserted in ``(source, id)`` order, the first
``seq`` winning among events of the same chunk, so concurrent PostgreSQL folds take the key
locks in one order.

An event is folded into the meters live when its fold runs. Every meter write folds the
whole tail first, in its own transaction (:func:`fold_all`, called by ``MeterService`` right
after it takes the meter lock), so a backfill or rebuild never counts an event that the tail
would count again. Readers fold the tail first (``EventService.settle``): read-your-writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec

from allotment.storage import meters_repo, seq_ranges, usage_marks, usage_write
from allotment.storage.database import Database, Tx

FOLD_CHUNK = 20_000
"""Most events one fold transaction of a reader (:meth:`EventService.settle`) or a meter write
(:func:`fold_all`) reads; they loop over chunks. Large, so the rows of a minute, hour and day
fold together (docs/benchmarks.md, issue 18: on events a minute apart 27.5 µs an event, against
51 for chunks of 5 000)."""


class _Data(msgspec.Struct):
    """A stored event as the fold reads it: its ``data`` only (the other members are
    skipped, not built)."""

    data: Any = None


_decode = msgspec.json.Decoder(_Data, float_hook=Decimal)
_SQLITE_LAG = (
    "SELECT coalesce((SELECT max(seq) FROM events), 0), "
    "(SELECT seq FROM usage_fold_state WHERE id = 1)"
)
_PG_TAIL = "SELECT coalesce(max(upper(seqs)) - 1, 0) FROM usage_fold_batches"
"""The largest queued seq (the index on ``upper(seqs)``)."""
_PG_LAG = "SELECT coalesce(sum(upper(r) - lower(r)), 0) FROM usage_fold_batches, unnest(seqs) AS r"
_PG_TAKE = (
    "SELECT id, seqs::text FROM usage_fold_batches WHERE id IN ("
    "SELECT id FROM (SELECT id, sum(n) OVER (ORDER BY id) - n AS before FROM ("
    "SELECT id, (SELECT sum(upper(r) - lower(r)) FROM unnest(seqs) AS r) AS n "
    "FROM usage_fold_batches{bound} ORDER BY id LIMIT ?) AS oldest) AS w WHERE before < ?) "
    "ORDER BY id FOR UPDATE{skip}"
)
"""The oldest queue rows whose values before them add up to less than the chunk, locked in
``id`` order (the window is read without locks; only the rows returned are locked)."""
_EVENT_COLUMNS = "seq, source, id, type, subject, time, event"

Touched = dict[tuple[str, str], int]


def tail_end(db: Database) -> int:
    """The largest unfolded ``seq`` (SQLite: the largest stored one) when some stored event
    is not folded yet, else 0 — one statement, no transaction: the cheap check a reader
    makes before it reads usage."""
    if db.dialect == "postgresql":
        return int(usage_marks.read_one(db, _PG_TAIL)[0])
    last, folded = usage_marks.read_one(db, _SQLITE_LAG)
    return int(last) if int(last) > int(folded or 0) else 0


def tail_end_statement(dialect: str) -> str:
    """:func:`tail_end` as one statement of one column (0: nothing to fold), for a caller
    that joins it to a read of its own (one statement for both)."""
    if dialect == "postgresql":
        return _PG_TAIL
    return (
        "SELECT CASE WHEN t_hi > coalesce(t_done, 0) THEN t_hi ELSE 0 END FROM"
        " (SELECT coalesce((SELECT max(seq) FROM events), 0) AS t_hi,"
        " (SELECT seq FROM usage_fold_state WHERE id = 1) AS t_done)"
    )


def lag(tx: Tx) -> int:
    """How many events wait to be folded (SQLite: an upper bound, ``seq`` values above the
    watermark)."""
    if tx.dialect == "postgresql":
        row = tx.one(_PG_LAG)
        assert row is not None
        return int(row[0])
    row = tx.one(_SQLITE_LAG)
    assert row is not None
    return max(0, int(row[0]) - int(row[1] or 0))


def waiting(tx: Tx, upto: int) -> bool:
    """Whether some event with ``seq <= upto`` is still unfolded (as this transaction sees)."""
    if tx.dialect == "postgresql":
        row = tx.one(
            "SELECT EXISTS (SELECT 1 FROM usage_fold_batches WHERE lower(seqs) <= ?)", (upto,)
        )
        return bool(row and row[0])
    row = tx.one("SELECT seq FROM usage_fold_state WHERE id = 1")
    return row is not None and int(row[0]) < upto


def fold_pending(
    tx: Tx, limit: int = FOLD_CHUNK, upto: int | None = None, *, skip_locked: bool = False
) -> tuple[int, Touched]:
    """Fold the oldest unfolded events (at most ``limit``; only ``seq <= upto`` when given)
    into the rollups and marks and record them folded, in the caller's write transaction.
    ``skip_locked`` (PostgreSQL): leave events another transaction is folding to it instead
    of waiting for it. Returns (events folded, the (meter id, subject) pairs touched with the
    earliest minute of each)."""
    if tx.dialect == "postgresql":
        rows, taken = _take_queued(tx, limit, upto, skip_locked)
    else:
        rows = _above_watermark(tx, limit, upto)
        taken = len(rows)
    last = int(rows[-1][0]) if rows else 0
    if not rows:
        return taken, {}
    rows = _drop_duplicates(tx, rows)
    touched: Touched = {}
    meters = meters_repo.live_by_event_types(tx, {str(r[3]) for r in rows}) if rows else []
    if meters:
        folded = usage_write.fold_events(
            usage_write.targets((m.id, m) for m in meters),
            ((r[3], r[4], int(r[5]), _decode.decode(r[6]).data, r[1], r[2]) for r in rows),
        )
        usage_write.write_folded(tx, folded)
        touched = folded.touched
    if tx.dialect != "postgresql":
        tx.execute("UPDATE usage_fold_state SET seq = ? WHERE id = 1", (last,))
    return taken, touched


def _drop_duplicates(tx: Tx, rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    """Record the keys of ``rows`` (events in ``seq`` order) in ``event_keys`` and delete the
    events among them whose key belongs to another event; returns the rest, in order."""
    seqs = [int(r[0]) for r in rows]
    params: list[Any]
    if tx.dialect == "postgresql":
        where, params = "e.seq = ANY(?::bigint[])", [seqs]
    else:
        where, params = "e.seq >= ? AND e.seq <= ?", [seqs[0], seqs[-1]]
    # a count, not RETURNING: the common chunk (every key new) fetches nothing back
    inserted = tx.rowcount(
        "INSERT INTO event_keys (source, id, seq) SELECT e.source, e.id, e.seq FROM events e "
        f"WHERE {where} ORDER BY e.source, e.id, e.seq ON CONFLICT (source, id) DO NOTHING",
        params,
    )
    if inserted == len(seqs):
        return rows
    # some key was there already: this very event's (recorded by migration 0760) or another
    # event's — then this one is a repeat that carried another time (or a later event of this
    # chunk under a key an earlier one took)
    dups = tx.execute(
        "SELECT e.seq FROM events e JOIN event_keys k ON k.source = e.source AND k.id = e.id "
        f"WHERE {where} AND k.seq <> e.seq",
        params,
    )
    if not dups:
        return rows
    gone = {int(d[0]) for d in dups}
    if tx.dialect == "postgresql":
        tx.execute("DELETE FROM events WHERE seq = ANY(?::bigint[])", [sorted(gone)])
    else:
        tx.execute_many("DELETE FROM events WHERE seq = ?", [(s,) for s in sorted(gone)])
    return [r for r in rows if int(r[0]) not in gone]


def _above_watermark(tx: Tx, limit: int, upto: int | None) -> Sequence[Sequence[Any]]:
    row = tx.one("SELECT seq FROM usage_fold_state WHERE id = 1")
    assert row is not None, "migration 0750 not applied"
    sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ?"
    params: list[int] = [int(row[0])]
    if upto is not None:
        sql += " AND seq <= ?"
        params.append(upto)
    return tx.execute(sql + " ORDER BY seq LIMIT ?", [*params, limit])


def _take_queued(
    tx: Tx, limit: int, upto: int | None, skip_locked: bool
) -> tuple[Sequence[Sequence[Any]], int]:
    """PostgreSQL: take at most ``limit`` of the oldest queued seqs (only ``<= upto`` when
    given) off ``usage_fold_batches``; return their events in ``seq`` order and how many seqs
    were taken."""
    meters_repo.lock_for_ingest(tx, tx.dialect)
    bound = "" if upto is None else " WHERE lower(seqs) <= ?"
    params: list[int] = [] if upto is None else [upto]
    locked = tx.execute(
        _PG_TAKE.format(bound=bound, skip=" SKIP LOCKED" if skip_locked else ""),
        [*params, limit, limit],
    )
    left = limit
    below = None if upto is None else upto + 1
    take: seq_ranges.Ranges = []
    whole: list[int] = []
    for batch_id, text in locked:
        head, rest = seq_ranges.split(seq_ranges.parse(str(text)), left, below)
        if not head:
            continue
        take.extend(head)
        left -= seq_ranges.count(head)
        if rest:
            tx.execute(
                "UPDATE usage_fold_batches SET seqs = ?::int8multirange WHERE id = ?",
                (seq_ranges.text(rest), int(batch_id)),
            )
        else:
            whole.append(int(batch_id))
    if whole:
        tx.execute("DELETE FROM usage_fold_batches WHERE id = ANY(?::bigint[])", [whole])
    if not take:
        return [], 0
    take.sort()
    # the values themselves (at most ``limit``): a join on the ranges' bounds can be planned
    # as a scan of the table per range (a fold of 2 000 single-event rows: 10x slower)
    rows = tx.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq = ANY(?::bigint[]) ORDER BY seq",
        [list(seq_ranges.values(take))],
    )
    return rows, limit - left


def fold_all(tx: Tx) -> Touched:
    """Fold the whole tail in the caller's write transaction, over as many chunks as it
    takes. Takes the meters lock exclusively first (a meter write holds it already): no other
    fold runs meanwhile, so holding the rows of several chunks cannot deadlock with one."""
    meters_repo.lock_for_meter_write(tx, tx.dialect)
    touched: Touched = {}
    while True:
        n, part = fold_pending(tx, FOLD_CHUNK)
        for key, minute in part.items():
            if key not in touched or minute < touched[key]:
                touched[key] = minute
        if n < FOLD_CHUNK:
            return touched


def mark_folded(tx: Tx) -> None:
    """Declare every stored event folded (a loader that wrote the rollups itself, in the same
    transaction as the events: ``bench/bulk.py``)."""
    tx.execute(
        "INSERT INTO event_keys (source, id, seq) SELECT source, id, seq FROM events "
        "WHERE true ORDER BY source, id, seq ON CONFLICT (source, id) DO NOTHING"
    )
    if tx.dialect == "postgresql":
        tx.execute("DELETE FROM usage_fold_batches")
        return
    tx.execute("UPDATE usage_fold_state SET seq = (SELECT coalesce(max(seq), 0) FROM events)")
