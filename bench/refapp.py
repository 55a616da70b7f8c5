"""The reference server: the floor and the naive way, in the project's framework and server.

Run by the harness as ``python -m bench.refapp --port N [--db URL] [--ingest-db URL]`` and
served by uvicorn with the same options as ``allotment serve`` (uvloop + httptools when
installed, no server header, no access log, keep-alive 30 s, one process).

Floor endpoints (no work at all):
  GET  /floor/value          a fixed JSON entitlement value
  POST /floor/events         reads the body, answers 204

Naive endpoints (what a user would write; blocking SQL on the thread pool, like the project):
  GET  /naive/value/{subject}            one SUM over the period's raw events
  GET  /naive/query/one?subject=S        one subject, 30 days, DAY windows, over raw events
  GET  /naive/query/all                  all subjects × model × DAY, over raw events
  POST /naive/events                     json.loads + INSERT … ON CONFLICT DO NOTHING
  POST /naive/authorize/{subject}        count and sum raw rows in one serialised transaction:
                                         requests of the last minute, the period's tokens,
                                         held reservations; then insert a request and a hold
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import data as D
from bench.stores import Store

FIXED_VALUE = b'{"hasAccess":true,"balance":5021000,"usage":2139000,"overage":0}'
GRANTED = 7_160_000
NAIVE_TABLE = "naive_events"


def _num(v: Any) -> int | float:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v  # type: ignore[no-any-return]


def create_app(db_url: str | None, ingest_url: str | None) -> Starlette:
    store = Store(db_url) if db_url else None
    ingest = Store(ingest_url) if ingest_url else None

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
        payload = json.loads(await request.body())
        events = payload if isinstance(payload, list) else [payload]
        await run_in_threadpool(ingest.insert_json_events, NAIVE_TABLE, events)
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
        ]
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
