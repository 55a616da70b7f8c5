"""Bulk loading of a data set, for sizes where the ingest service would take too long.

It writes what ingest writes, with ingest's own code where it matters:

* ``events`` rows exactly as :meth:`allotment.services.events.EventService.ingest` builds them
  (same columns, same stored JSON), inserted with ``executemany`` (SQLite) or ``COPY``
  (PostgreSQL) while the table's secondary indexes are dropped, then recreated from their saved
  definitions (so an index added by a later migration is recreated too);
* the rollups through :func:`allotment.storage.usage_write.aggregate_events` — the function
  ingest calls — in the same transaction as each chunk of events.

:func:`verify` then checks the rollups against the plain computation over the raw events on a
sample of subjects, and ``tests/bench/test_bench_quick.py`` checks that a bulk-loaded database
equals a service-loaded one table by table (so the loader cannot drift from ingest unnoticed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec

from bench import data as D

_encoder = msgspec.json.Encoder(decimal_format="number")


def _raw_conn(tx: Any) -> Any:
    """The driver connection behind a project Tx (sqlite3 or psycopg)."""
    return tx._conn


def _secondary_indexes(tx: Any, dialect: str, table: str) -> list[tuple[str, str]]:
    if dialect == "sqlite":
        rows = tx.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        )
    else:
        rows = tx.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ? "
            "AND i.schemaname = current_schema() AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname)",
            (table,),
        )
    return [(str(r[0]), str(r[1])) for r in rows]


def load(
    container: Any,
    n_events: int,
    n_subjects: int,
    progress: Callable[[str], None],
    chunk: int = 100_000,
) -> dict[str, Any]:
    """Load ``n_events`` generated events (and their rollups) into the container's database."""
    from allotment.domain.events import CloudEvent
    from allotment.storage import meters_repo, usage_tail, usage_write

    db = container.db
    dialect = db.dialect
    now_us = container.now_us()
    t_all = time.perf_counter()
    with db.write() as tx:
        meters = meters_repo.live_by_event_types(tx, {D.EVENT_TYPE})
        if not meters:
            raise RuntimeError(f"no meter for event type {D.EVENT_TYPE}: config not synced?")
        by_type = usage_write.targets((m.id, m) for m in meters)
        indexes = _secondary_indexes(tx, dialect, "events")
        for name, _ in indexes:
            tx.execute(f"DROP INDEX {name}")
    stored = 0
    last = time.monotonic()
    for rows in D.generate(n_events, batch=chunk, n_subjects=n_subjects):
        events = [
            CloudEvent(
                id=r.id,
                source=D.SOURCE,
                type=D.EVENT_TYPE,
                subject=r.subject,
                time=D.EPOCH + timedelta(microseconds=r.time_us),
                data={"tokens": r.tokens, "model": r.model},
            )
            for r in rows
        ]
        tuples = [
            (
                e.source,
                e.id,
                e.type,
                e.subject,
                r.time_us,
                now_us,
                _encoder.encode(e.to_wire()).decode(),
            )
            for e, r in zip(events, rows, strict=True)
        ]
        with db.write() as tx:
            conn = _raw_conn(tx)
            if dialect == "sqlite":
                conn.executemany(
                    "INSERT INTO events (source, id, type, subject, time, ingested_at, event) "
                    "VALUES (?,?,?,?,?,?,?)",
                    tuples,
                )
            else:
                with conn.cursor().copy(
                    "COPY events (source, id, type, subject, time, ingested_at, event) FROM STDIN"
                ) as cp:
                    for tup in tuples:
                        cp.write_row(tup)
            usage_write.aggregate_events(
                tx,
                by_type,
                ((e.type, e.subject, r.time_us, e.data) for e, r in zip(events, rows, strict=True)),
            )
            usage_tail.mark_folded(tx)  # folded here: the deferred fold must not count them again
        stored += len(rows)
        if time.monotonic() - last > 15:
            last = time.monotonic()
            rate = stored / (time.perf_counter() - t_all)
            progress(f"    bulk: {stored:,} / {n_events:,} events ({rate:,.0f}/s)")
    t_idx = time.perf_counter()
    with db.write() as tx:
        if dialect == "postgresql":
            # the server's statement timeout (30 s by default) bounds one request's statement;
            # rebuilding the dedup index over 10 M random keys takes longer than that
            tx.execute("SET LOCAL statement_timeout = 0")
        for _, sql in indexes:
            tx.execute(sql)
    if dialect == "postgresql":
        import psycopg

        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    else:
        with db.write() as tx:
            tx.execute("ANALYZE")
    return {
        "events": stored,
        "seconds": time.perf_counter() - t_all,
        "index_seconds": time.perf_counter() - t_idx,
        "indexes": [n for n, _ in indexes],
    }


def verify(container: Any, subjects: list[str]) -> dict[str, Any]:
    """Rollups vs the plain computation over raw events, for ``subjects`` (sum and count per
    model over the whole window), and total counts. Raises AssertionError on a mismatch."""
    db = container.db
    pg = db.dialect == "postgresql"
    num = (
        "(event::jsonb->'data'->>'tokens')::numeric"
        if pg
        else "json_extract(event, '$.data.tokens')"
    )
    model = "event::jsonb->'data'->>'model'" if pg else "json_extract(event, '$.data.model')"
    checked = []
    with db.read() as tx:
        (meter_id,) = tx.one(
            "SELECT id FROM meters WHERE slug = ? AND deleted_at IS NULL", (D.METER_SLUG,)
        ) or (None,)
        assert meter_id is not None
        for s in subjects:
            plain: dict[str, tuple[Decimal, int]] = {}
            for m, total, n in tx.execute(
                f"SELECT {model}, sum({num}), count(*) FROM events WHERE subject = ? AND type = ? "
                f"GROUP BY {model}",
                (s, D.EVENT_TYPE),
            ):
                plain[str(m)] = (Decimal(str(total)), int(n))
            rolled: dict[str, tuple[Decimal, int]] = {}
            for gk, total, n in tx.execute(
                "SELECT group_key, sum, count FROM usage_minute WHERE meter_id = ? AND subject = ?",
                (meter_id, s),
            ):
                m = msgspec.json.decode(gk)["model"]
                t0, n0 = rolled.get(m, (Decimal(0), 0))
                rolled[m] = (t0 + Decimal(str(total)), n0 + int(n))
            assert plain == rolled, f"rollups differ from raw events for {s}: {plain} vs {rolled}"
            checked.append(s)
        (n_events,) = tx.one("SELECT count(*) FROM events WHERE type = ?", (D.EVENT_TYPE,)) or (0,)
        (n_rolled,) = tx.one(
            "SELECT sum(count) FROM usage_minute WHERE meter_id = ?", (meter_id,)
        ) or (0,)
        assert int(n_events) == int(n_rolled or 0), f"events {n_events} != rolled {n_rolled}"
    return {"subjects_checked": checked, "events": int(n_events)}
