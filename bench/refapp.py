"""The reference server: the floor and the naive way, in the project's framework and server.

Run by the harness as ``python -m bench.refapp --port N [--db URL] [--ingest-db URL]`` and
served by uvicorn with the same options as ``allotment serve`` (uvloop + httptools when
installed, no server header, no access log, keep-alive 30 s, one process).

Floor endpoints (no work at all):
  GET  /floor/value          a fixed JSON entitlement value
  POST /floor/events         reads the body, answers 204

Naive endpoints (what a user would write):
  GET  /naive/value/{subject}            one SUM over the period's raw events
  GET  /naive/query/one?subject=S        one subject, 30 days, DAY windows, over raw events
  GET  /naive/query/all                  all subjects × model × DAY, over raw events
  POST /naive/events                     :class:`NaiveIngest`: json.loads + executemany of
                                         INSERT OR IGNORE / ON CONFLICT DO NOTHING, one commit,
                                         in the async handler (no thread hop)
  POST /naive/authorize/{subject}        count and sum raw rows in one serialised transaction:
                                         requests of the last minute, the period's tokens,
                                         held reservations; then insert a request and a hold

The reads (and authorize) run their blocking SQL on the thread pool, as the project does. The
naive ingest does not: issue 18 asks for the reference to be as fast as a naive app can
honestly be, and a thread hop per request only costs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import data as D
from bench.stores import Store, is_pg, sqlite_path

FIXED_VALUE = b'{"hasAccess":true,"balance":5021000,"usage":2139000,"overage":0}'
GRANTED = 7_160_000
NAIVE_TABLE = "naive_events"


def _num(v: Any) -> int | float:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v  # type: ignore[no-any-return]


class NaiveIngest:
    """The naive ingest app, whole: what a user writes in an afternoon, as fast as it honestly
    gets (issue 18).

    One table ``naive_events(source, id, type, subject, time BIGINT, data TEXT)`` with a unique
    index on ``(source, id)`` and no other index (:func:`create_table`). Per request: the
    standard library's ``json.loads`` of the body, one tuple per event (the timestamp parsed by
    ``datetime.fromisoformat``, ``data`` re-serialised by ``json.dumps``), one ``executemany``
    and one commit, in the async handler itself (no thread hop):

    * SQLite: ``INSERT OR IGNORE`` on one connection opened at start, called inline (SQLite has
      one writer, so an await would buy nothing);
    * PostgreSQL: ``INSERT … ON CONFLICT DO NOTHING`` through psycopg 3's async connection
      pool (16 autocommit connections, the clients' count; a batch is one transaction around
      a pipelined executemany, a single event one autocommitted statement), awaited, so
      requests overlap their round trips and the server groups their commits — the same app
      called inline with one blocking connection measured 0.4–0.7× this on batches and
      0.16–0.18× on single events (A/B in one run, 2026-12-03).

    No validation beyond what ``json.loads`` and the key lookups do. Durable like the project:
    SQLite WAL with ``synchronous=FULL``, PostgreSQL with the cluster's ``fsync=on`` and
    ``synchronous_commit=on``.
    """

    POOL_SIZE = 16

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = is_pg(url)
        self.pool: Any = None
        self.conn: sqlite3.Connection | None = None
        if self.pg:
            self.sql = (
                f"INSERT INTO {NAIVE_TABLE} VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING"
            )
        else:
            self.conn = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=60)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.sql = f"INSERT OR IGNORE INTO {NAIVE_TABLE} VALUES (?,?,?,?,?,?)"

    @staticmethod
    def create_table(url: str) -> None:
        st = Store(url)
        st.create_table(NAIVE_TABLE, jsonb=False, unique=True, index=False)
        st.close()

    async def open(self) -> None:
        if self.pg:
            from psycopg_pool import AsyncConnectionPool

            self.pool = AsyncConnectionPool(
                self.url,
                min_size=self.POOL_SIZE,
                max_size=self.POOL_SIZE,
                kwargs={"autocommit": True},
                open=False,
            )
            await self.pool.open(wait=True)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    @staticmethod
    def rows(body: bytes) -> list[tuple[Any, ...]]:
        payload = json.loads(body)
        events = payload if isinstance(payload, list) else [payload]
        epoch = D.EPOCH
        us = timedelta(microseconds=1)
        dumps = json.dumps
        return [
            (
                e["source"],
                e["id"],
                e["type"],
                e["subject"],
                (datetime.fromisoformat(e["time"]) - epoch) // us,
                dumps(e.get("data")),
            )
            for e in events
        ]

    async def insert(self, body: bytes) -> None:
        rows = self.rows(body)
        if self.conn is not None:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.sql, rows)
            self.conn.execute("COMMIT")
            return
        async with self.pool.connection() as conn:
            if len(rows) == 1:  # autocommit: one statement, one round trip, one commit
                await conn.execute(self.sql, rows[0])
                return
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(self.sql, rows)


def create_app(db_url: str | None, ingest_url: str | None) -> Starlette:
    store = Store(db_url) if db_url else None
    ingest = NaiveIngest(ingest_url) if ingest_url else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if ingest is not None:
            await ingest.open()
        try:
            yield
        finally:
            if ingest is not None:
                await ingest.close()

    async def readyz(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    async def floor_value(request: Request) -> Response:
        return Response(FIXED_VALUE, media_type="application/json")

    async def floor_events(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    def _value(subject: str) -> bytes:
        assert store is not None
        usage = _num(store.naive_usage(NAIVE_TABLE, subject, D.T0_US, D.T_END_US))
        balance = GRANTED - usage
        return json.dumps(
            {
                "hasAccess": balance > 0,
                "balance": max(balance, 0),
                "usage": usage,
                "overage": max(-balance, 0),
            }
        ).encode()

    async def naive_value(request: Request) -> Response:
        body = await run_in_threadpool(_value, request.path_params["subject"])
        return Response(body, media_type="application/json")

    def _rows(rows: list[Any], subject_first: bool) -> bytes:
        out = []
        for r in rows:
            if subject_first:
                subject, model, day, value = r
                out.append(
                    {
                        "value": _num(value),
                        "windowStart": int(day),
                        "subject": subject,
                        "groupBy": {"model": model},
                    }
                )
            else:
                day, value = r
                out.append({"value": _num(value), "windowStart": int(day)})
        return json.dumps({"windowSize": "DAY", "data": out}).encode()

    async def naive_query_one(request: Request) -> Response:
        assert store is not None
        subject = request.query_params["subject"]

        def run() -> bytes:
            return _rows(store.naive_query_one(NAIVE_TABLE, subject, D.T0_US, D.T_END_US), False)

        return Response(await run_in_threadpool(run), media_type="application/json")

    async def naive_query_all(request: Request) -> Response:
        assert store is not None

        def run() -> bytes:
            return _rows(store.naive_query_all(NAIVE_TABLE, D.T0_US, D.T_END_US), True)

        return Response(await run_in_threadpool(run), media_type="application/json")

    if store is not None:
        store.create_authorize_tables()

    async def naive_authorize(request: Request) -> Response:
        assert store is not None
        await request.body()
        subject = request.path_params["subject"]

        def run() -> tuple[int, bytes]:
            return store.naive_authorize(NAIVE_TABLE, subject, D.T0_US, D.T_END_US)

        status, out = await run_in_threadpool(run)
        return Response(out, status_code=status, media_type="application/json")

    async def naive_events(request: Request) -> Response:
        assert ingest is not None
        await ingest.insert(await request.body())  # no thread hop (see NaiveIngest)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/readyz", readyz),
            Route("/floor/value", floor_value),
            Route("/floor/events", floor_events, methods=["POST"]),
            Route("/naive/value/{subject}", naive_value),
            Route("/naive/query/one", naive_query_one),
            Route("/naive/query/all", naive_query_all),
            Route("/naive/events", naive_events, methods=["POST"]),
            Route("/naive/authorize/{subject}", naive_authorize, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.refapp")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", help="database holding the naive events table")
    parser.add_argument("--ingest-db", help="database the naive ingest endpoint writes to")
    args = parser.parse_args()
    app = create_app(args.db, args.ingest_db)
    # The same options as `allotment serve` (src/allotment/cli.py).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        loop="auto",
        http="auto",
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
