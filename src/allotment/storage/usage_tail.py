"""The unfolded tail of the ``events`` table: SQLite's deferred fold (migration 0750).

On SQLite an ingest transaction only appends the new events (dedup on ``(source, id)``) and
commits; they are folded into the rollups and the usage marks later, in transactions of
their own that read the events above the watermark ``usage_fold_state.seq`` in ``seq``
order and advance it in the same transaction as the upserts. SQLite has one writer at a
time, so ``seq`` order is commit order and the watermark never skips an event; a crash
before the fold's commit leaves the watermark where it was, so every stored event is folded
exactly once. (PostgreSQL folds at ingest: there a smaller ``seq`` may commit later.)

An event is folded into the meters live when its fold runs. Every meter write folds the
whole tail first, in its own transaction (:func:`fold_all`, called by ``MeterService`` right
after it takes the meter lock), so a backfill or rebuild never counts an event that the tail
would count again.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from allotment.storage import meters_repo, usage_marks, usage_write
from allotment.storage.database import Database, Tx

FOLD_CHUNK = 5_000
"""Most events one fold transaction reads (a background fold holds the writer this long)."""

_decode = msgspec.json.Decoder(float_hook=Decimal)
_LAG = (
    "SELECT coalesce((SELECT max(seq) FROM events), 0), "
    "(SELECT seq FROM usage_fold_state WHERE id = 1)"
)

Touched = dict[tuple[str, str], int]


def tail_end(db: Database) -> int:
    """The largest stored ``seq`` when some event is not folded yet, else 0 (one statement,
    no transaction: the cheap check a reader makes before it reads usage)."""
    last, folded = usage_marks.read_one(db, _LAG)
    return int(last) if int(last) > int(folded or 0) else 0


def lag(tx: Tx) -> int:
    """How many ``seq`` values lie above the watermark (an upper bound of unfolded events)."""
    row = tx.one(_LAG)
    assert row is not None
    return max(0, int(row[0]) - int(row[1] or 0))


def fold_pending(tx: Tx, limit: int | None = None, upto: int | None = None) -> tuple[int, Touched]:
    """Fold the oldest unfolded events (at most ``limit``; only ``seq <= upto`` when given)
    into the rollups and marks, and advance the watermark, in the caller's write
    transaction. Returns (events folded, the (meter id, subject) pairs touched with the
    earliest minute of each)."""
    row = tx.one("SELECT seq FROM usage_fold_state WHERE id = 1")
    assert row is not None, "migration 0750 not applied"
    watermark = int(row[0])
    sql = "SELECT seq, source, id, type, subject, time, event FROM events WHERE seq > ?"
    params: list[int] = [watermark]
    if upto is not None:
        sql += " AND seq <= ?"
        params.append(upto)
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = tx.execute(sql, params)
    if not rows:
        return 0, {}
    touched: Touched = {}
    meters = meters_repo.live_by_event_types(tx, {str(r[3]) for r in rows})
    if meters:
        folded = usage_write.fold_events(
            usage_write.targets((m.id, m) for m in meters),
            ((r[3], r[4], int(r[5]), _decode.decode(r[6]).get("data"), r[1], r[2]) for r in rows),
        )
        usage_write.write_folded(tx, folded)
        touched = folded.touched
    tx.execute("UPDATE usage_fold_state SET seq = ? WHERE id = 1", (int(rows[-1][0]),))
    return len(rows), touched


def fold_all(tx: Tx) -> Touched:
    """Fold the whole tail in the caller's write transaction (SQLite; a no-op on PostgreSQL,
    which folds at ingest)."""
    touched: Touched = {}
    if tx.dialect != "sqlite":
        return touched
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
    tx.execute("UPDATE usage_fold_state SET seq = (SELECT coalesce(max(seq), 0) FROM events)")
