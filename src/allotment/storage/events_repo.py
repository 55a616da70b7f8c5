"""The ``events`` table: append with exactly-once dedup on ``(source, id)``, list, scan by type.

Rows: ``seq`` (insertion order), ``source``, ``id``, ``type``, ``subject``, ``time`` (event
time, µs), ``ingested_at`` (µs, the server clock at ingest), ``event`` (the normalized CloudEvent
as JSON text, see :meth:`allotment.domain.events.CloudEvent.to_wire`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, compress, cycle
from operator import countOf, itemgetter

from allotment.domain.events import PreparedEvent
from allotment.storage import meters_repo, seq_ranges
from allotment.storage.database import Database, DuplicateKey, Tx

COPY_MIN_ROWS = 64
"""PostgreSQL: fewer rows than this go straight to the statement that skips stored rows (one
round trip instead of three; wall time per transaction in process, 1 / 4 / 16 / 64 / 256
rows: 0.9 / 0.7 / 0.7 / 1.5 / 6.2 ms against 2.1 / 2.0 / 0.8 / 1.4 / 2.8 ms with the COPY);
the writer pipelines such a group whole (:func:`append_few`: ``BEGIN``, the meters
lock, this statement and ``COMMIT`` in one round trip)."""
_INSERT_CHUNK = 10_000
"""Rows per array INSERT on PostgreSQL (the statement that skips stored rows)."""

_INSERT = (
    "INSERT INTO events (source, id, type, subject, time, event, ingested_at) "
    "VALUES {rows} ON CONFLICT (time, source, id) DO NOTHING"
)
_INSERT_ROWS = 100
"""SQLite's append: rows per ``INSERT … VALUES (…), (…), …`` statement (at most 603 bound
values, within SQLite's oldest default limit of 999). One statement per 100 rows instead of one
step per row (``executemany``): the per-row cost of the sqlite3 module (reset, bind, a release
of the interpreter lock around each step) is paid once per statement; docs/benchmarks.md
(issue 18, 2026-12-06). ``ingested_at`` (the same for every row of a transaction) is bound
once, as ``?1``; so are ``source`` (``?2``) and ``type`` (``?3``) when every row of the
statement has the same one (the common batch: one producer, one event type), and the rows
then bind four values each instead of six (:func:`_insert_rows`). Binding a text value is
a copy and an allocation in SQLite, under its connection mutex: it was about 40 % of the
append's instructions, and sharing the two saves a fifth of the statement's CPU per row
(docs/benchmarks.md, issue 18, 2026-12-07). Each row's values are the first six of its
``PreparedEvent`` less the shared ones, taken without building a tuple per row
(:func:`_flat`). A group's last ``len % 100`` rows go in one statement of their own length."""
_insert_sql: dict[tuple[int, bool, bool], str] = {}
_source = itemgetter(0)
_type = itemgetter(2)
_INSERT_SEQ = (
    "INSERT INTO events (seq, source, id, type, subject, time, ingested_at, event) "
    "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (time, source, id) DO NOTHING"
)
_RESERVE = (
    "INSERT INTO usage_fold_batches (seqs) SELECT range_agg(int8range(s, s + 1)) "
    "FROM (SELECT nextval('events_seq_seq') AS s FROM generate_series(1, ?)) AS r "
    "RETURNING seqs::text"
)
"""PostgreSQL: take ``n`` values of the events' ``seq`` sequence and queue them for the fold
as ONE row, in one statement; returns them as a multirange (one range unless another
process drew values from the sequence meanwhile)."""
_COPY_COLUMNS = ("seq", "source", "id", "type", "subject", "time", "ingested_at", "event")
_COPY_TYPES = ("int8", "text", "text", "text", "text", "int8", "int8", "text")
_SQLITE_BEFORE = (
    "SELECT coalesce((SELECT max(seq) FROM events), 0), total_changes(), "
    "(SELECT seq FROM usage_fold_state WHERE id = 1)"
)


def insert_new(
    tx: Tx, dialect: str, rows: Sequence[PreparedEvent], ingested_at_us: int
) -> set[tuple[str, str]] | None:
    """Insert the rows not stored yet; return the keys actually inserted, or None when every
    row was inserted (the common case, reported without building a set).

    The dedup at ingest is the unique index ``events_time_key (time, source, id)``
    (migration 0760): time-led, so its inserts land where the newest events are. A row
    already stored with the same time (a retry: earlier request, or a concurrent transaction
    that commits first) is skipped: first one wins. A row whose ``(source, id)`` is stored
    with ANOTHER time is inserted here and removed by the deferred fold before it counts
    (``usage_tail.fold_pending``: ``event_keys``), so it is never counted twice either; the
    count returned here then includes it. On PostgreSQL ``rows`` hold distinct
    ``(source, id)``, sorted by it, so that concurrent transactions take the unique-index locks
    in the same order; on SQLite (one writer) they may repeat and come in any order: the
    first of a same-time repeat is kept.

    SQLite: the caller's write transaction excludes every other writer, so the rows are
    appended in order, :data:`_INSERT_ROWS` to a statement, and only counted
    (``total_changes()``); when some were skipped, the inserted ones are exactly those above
    the largest ``seq`` seen before. A fold may have deleted the newest rows (duplicates),
    and SQLite would hand their ``seq`` out again, below the fold watermark: then the rows
    get explicit ``seq`` above it.
    PostgreSQL (many processes may insert the same key at once), at least
    :data:`COPY_MIN_ROWS` rows: inside a savepoint, one
    statement takes ``len(rows)`` values of the ``seq`` sequence and queues them for the
    deferred fold as one ``usage_fold_batches`` row (:data:`_RESERVE`; see
    ``storage/usage_tail.py``), then one binary ``COPY`` appends the rows with those seqs, in
    the given order. That is the common case, every row new: no conflict handling per row,
    about a third of the server's CPU of the statement below (docs/benchmarks.md, "Issue 18,
    PostgreSQL write path"). When the unique index refuses a row (a retry; a concurrent
    transaction that inserted the same row commits first — COPY waits for it like any
    insert), the savepoint is rolled back (rows and queue row gone; the reserved seqs stay
    unused) and the rows go through ``INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO
    NOTHING RETURNING``, which queues the seqs it inserted as one row itself. SQLite's fold
    needs no queue: it folds above a watermark.
    """
    if dialect == "sqlite":
        before = tx.one(_SQLITE_BEFORE)
        assert before is not None
        last, folded = int(before[0]), int(before[2] or 0)
        if last >= folded:
            at = int(ingested_at_us)
            step = _INSERT_ROWS
            for start in range(0, len(rows), step):
                chunk = rows[start : start + step]
                first = chunk[0]
                one_source = countOf(map(_source, chunk), first[0]) == len(chunk)
                one_type = countOf(map(_type, chunk), first[2]) == len(chunk)
                tx.execute(
                    _insert_rows(len(chunk), one_source, one_type),
                    [
                        at,
                        first[0] if one_source else None,
                        first[2] if one_type else None,
                        *_flat(chunk, one_source, one_type),
                    ],
                )
        else:  # the newest rows were deleted as duplicates: never reuse a folded seq
            last = folded
            tx.execute_many(
                _INSERT_SEQ,
                [(folded + 1 + n, *r[:5], ingested_at_us, r[5]) for n, r in enumerate(rows)],
            )
        after = tx.one("SELECT total_changes()")
        assert after is not None
        if int(after[0]) - int(before[1]) == len(rows):
            return None
        return {
            (str(s), str(i))
            for s, i in tx.execute("SELECT source, id FROM events WHERE seq > ?", (last,))
        }
    if len(rows) < COPY_MIN_ROWS:
        return _insert_skipping(tx, rows, ingested_at_us) if rows else None
    tx.execute("SAVEPOINT ingest_copy")
    reserved = tx.one(_RESERVE, (len(rows),))
    assert reserved is not None
    seqs = seq_ranges.values(seq_ranges.parse(str(reserved[0])))
    try:
        tx.copy_in(
            "events",
            _COPY_COLUMNS,
            _COPY_TYPES,
            (
                (s, r[0], r[1], r[2], r[3], r[4], ingested_at_us, r[5])
                for s, r in zip(seqs, rows, strict=True)
            ),
        )
    except DuplicateKey:  # a retry of a stored event: the statement that skips it
        tx.execute("ROLLBACK TO SAVEPOINT ingest_copy")
        return _insert_skipping(tx, rows, ingested_at_us)
    return None


def _insert_skipping(
    tx: Tx, rows: Sequence[PreparedEvent], ingested_at_us: int
) -> set[tuple[str, str]] | None:
    """PostgreSQL's append when some row may be stored already: ``INSERT … SELECT FROM
    unnest(arrays) ON CONFLICT DO NOTHING RETURNING``, which also queues the inserted seqs as
    one ``usage_fold_batches`` row per statement."""
    inserted: set[tuple[str, str]] = set()
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        result = tx.execute(_PG_SKIPPING, _skipping_params(chunk, ingested_at_us))
        inserted.update((str(r[0]), str(r[1])) for r in result)
    return None if len(inserted) == len(rows) else inserted


def append_few(
    db: Database, rows: Sequence[PreparedEvent], ingested_at_us: int
) -> set[tuple[str, str]] | None:
    """PostgreSQL, fewer than :data:`COPY_MIN_ROWS` rows (a group of single events): the
    ingest transaction whole, :func:`insert_new` after the meters lock, in ONE round trip:
    ``BEGIN``, the lock (``meters_repo.send_lock_for_ingest``), the append that skips stored
    rows and ``COMMIT`` are pipelined (``Database.pipelined_write``); what it returns is read
    once committed."""
    assert 0 < len(rows) < COPY_MIN_ROWS
    with db.pipelined_write() as tx:
        meters_repo.send_lock_for_ingest(tx)
        pending = tx.send(_PG_SKIPPING, _skipping_params(rows, ingested_at_us))
    inserted = {(str(r[0]), str(r[1])) for r in pending.rows()}
    return None if len(inserted) == len(rows) else inserted


_PG_SKIPPING = (
    "WITH new AS (INSERT INTO events (source, id, type, subject, time, ingested_at, "
    "event) SELECT s, i, t, u, w, ?, e FROM unnest(?::text[], ?::text[], ?::text[], "
    "?::text[], ?::bigint[], ?::text[]) AS r(s, i, t, u, w, e) "
    "ON CONFLICT (time, source, id) DO NOTHING RETURNING source, id, seq), "
    "queued AS (INSERT INTO usage_fold_batches (seqs) "
    "SELECT range_agg(int8range(seq, seq + 1)) FROM new HAVING count(*) > 0) "
    "SELECT source, id FROM new"
)
"""One statement of arrays (parsing and planning do not grow with the rows)."""


def _skipping_params(chunk: Sequence[PreparedEvent], ingested_at_us: int) -> list[object]:
    return [
        ingested_at_us,
        [r[0] for r in chunk],
        [r[1] for r in chunk],
        [r[2] for r in chunk],
        [r[3] for r in chunk],
        [r[4] for r in chunk],
        [r[5] for r in chunk],
    ]


def _insert_rows(n: int, one_source: bool, one_type: bool) -> str:
    """The append of ``n`` rows: ``(?4, …, ?9, ?1), (?10, …), …`` with ``?1`` = ingested_at,
    and ``?2`` for every row's source when ``one_source``, ``?3`` for its type when
    ``one_type`` (then not bound per row)."""
    key = (n, one_source, one_type)
    sql = _insert_sql.get(key)
    if sql is None:
        per_row = 6 - one_source - one_type
        rows = []
        for i in range(n):
            slots = iter(f"?{4 + per_row * i + k}" for k in range(per_row))
            source = "?2" if one_source else next(slots)
            id_ = next(slots)
            type_ = "?3" if one_type else next(slots)
            rest = ",".join(slots)  # subject, time, event
            rows.append(f"({source},{id_},{type_},{rest},?1)")
        sql = _insert_sql[key] = _INSERT.format(rows=",".join(rows))
    return sql


_MASKS = {
    (one_source, one_type): (int(not one_source), 1, int(not one_type), 1, 1, 1, 0)
    for one_source in (False, True)
    for one_type in (False, True)
}
"""Which values of a ``PreparedEvent`` a row binds: all but ``data`` and the shared ones."""


def _flat(rows: Sequence[PreparedEvent], one_source: bool, one_type: bool) -> Iterator[object]:
    """The values each row binds, one after the other (C-level iteration: no tuple per row)."""
    return compress(chain.from_iterable(rows), cycle(_MASKS[one_source, one_type]))


def scan_type(
    tx: Tx, event_type: str, from_us: int | None, page: int = 2000
) -> Iterator[list[tuple[str, int, str]]]:
    """Pages of ``(subject, time_us, event_json)`` for every stored event of ``event_type``
    (with ``time >= from_us`` when given), in insertion order. (A scan of the table in
    ``seq`` order, the type filtered: a meter backfill, which folds the tail first.)"""
    after = -1
    while True:
        rows = tx.execute(
            "SELECT seq, subject, time, event FROM events WHERE type = ? AND seq > ? "
            "AND +time >= ? ORDER BY seq LIMIT ?",  # +time: the seq order, not a sort
            (event_type, after, from_us if from_us is not None else -(2**62), page),
        )
        if not rows:
            return
        after = int(rows[-1][0])
        yield [(str(r[1]), int(r[2]), str(r[3])) for r in rows]
        if len(rows) < page:
            return


@dataclass(frozen=True)
class EventFilter:
    from_us: int
    to_us: int | None = None
    ingested_from_us: int | None = None
    ingested_to_us: int | None = None
    id_contains: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class ListedEvent:
    seq: int
    type: str
    time_us: int
    ingested_at_us: int
    event_json: str


def list_page(
    tx: Tx, f: EventFilter, limit: int, before: tuple[int, int] | None = None
) -> list[ListedEvent]:
    """Events matching ``f``, newest event time first (ties: latest inserted first).

    ``before`` = ``(time_us, seq)`` of the last row of the previous page (keyset paging).
    ``to`` is exclusive, ``ingestedAtFrom``/``ingestedAtTo`` inclusive, ``id`` a
    case-sensitive substring match, ``subject`` exact.
    """
    where = ["time >= ?"]
    params: list[object] = [f.from_us]
    if f.to_us is not None:
        where.append("time < ?")
        params.append(f.to_us)
    if f.ingested_from_us is not None:
        where.append("ingested_at >= ?")
        params.append(f.ingested_from_us)
    if f.ingested_to_us is not None:
        where.append("ingested_at <= ?")
        params.append(f.ingested_to_us)
    if f.id_contains:
        # substring test without LIKE wildcards; case-sensitive on both engines
        where.append("replace(id, ?, '') <> id")
        params.append(f.id_contains)
    if f.subject is not None:
        where.append("subject = ?")
        params.append(f.subject)
    if before is not None:
        where.append("(time < ? OR (time = ? AND seq < ?))")
        params.extend([before[0], before[0], before[1]])
    params.append(limit)
    rows = tx.execute(
        "SELECT seq, type, time, ingested_at, event FROM events WHERE "
        + " AND ".join(where)
        + " ORDER BY time DESC, seq DESC LIMIT ?",
        params,
    )
    return [ListedEvent(int(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4])) for r in rows]


def count_per_minute(tx: Tx, from_us: int, to_us: int) -> list[tuple[int, int]]:
    """(minute start µs, events) of every minute of event time in ``[from_us, to_us)`` that has
    events: a range scan of the ``events_time_key`` index, never of the table."""
    rows = tx.execute(
        "SELECT time - (time % 60000000) AS minute, COUNT(*) FROM events "
        "WHERE time >= ? AND time < ? GROUP BY minute ORDER BY minute",
        (from_us, to_us),
    )
    return [(int(r[0]), int(r[1])) for r in rows]
