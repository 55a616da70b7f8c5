"""Operational routes: liveness, readiness, the OpenAPI document, and the test clock."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.clock import FrozenClock
from allotment.domain.errors import NotFound, Unavailable
from allotment.domain.timeutil import format_rfc3339, parse_rfc3339
from allotment.http.openapi_doc import openapi_document
from allotment.http.params import decode_json, read_body, require_json_object
from allotment.http.responses import json_response
from allotment.http.runtime import call, container
from allotment.storage import migrate


async def healthz(request: Request) -> Response:
    """The process is alive and serving HTTP (no dependency is checked; never touches the
    database, so a database outage does not make an orchestrator restart healthy replicas)."""
    return json_response({"status": "ok"})


def _readiness(request: Request) -> dict[str, object]:
    """One read transaction: bounded by the pool timeout on PostgreSQL (see PoolSettings)."""
    c = container(request)
    try:
        current = migrate.is_current(c.db)
    except Unavailable:
        raise
    except Exception as exc:
        raise Unavailable(f"database check failed: {exc.__class__.__name__}") from exc
    if not current:
        raise Unavailable("database schema is behind: run `allotment migrate`")
    return {"status": "ready", "database": c.db.dialect}


async def readyz(request: Request) -> Response:
    """The database answers and its schema is current; 503 problem+json otherwise."""
    return json_response(await call(_readiness, request))


async def openapi_json(request: Request) -> Response:
    return json_response(openapi_document())


async def test_clock(request: Request) -> Response:
    """PUT {"now": "<RFC 3339>"} moves the clock; only when started with ALLOTMENT_TEST_CLOCK."""
    clock = container(request).clock
    if not isinstance(clock, FrozenClock):
        raise NotFound("the test clock is not enabled on this server")
    if request.method == "PUT":
        body = require_json_object(decode_json(await read_body(request)))
        clock.set(parse_rfc3339(str(body.get("now", "")), "now"))
    return json_response({"now": format_rfc3339(clock.now())})


ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/api/v1/openapi.json", openapi_json, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/api/_testing/clock", test_clock, methods=["GET", "PUT"]),
]
