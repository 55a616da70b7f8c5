"""The ONE place that maps domain errors to HTTP statuses (RFC 7807 problem+json).

Handlers are looked up through the exception's class hierarchy, so every subclass of a
mapped error inherits its status. Anything unmapped is a bug: 500 with no detail, logged.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from allotment.domain import errors
from allotment.http.rate_limit_fields import problem_headers
from allotment.http.responses import problem_response
from allotment.http.v1_conventions import is_v1, problem_fields

log = logging.getLogger("allotment.http")

STATUS_BY_ERROR: dict[type[errors.DomainError], int] = {
    errors.InvalidInput: 400,
    errors.LimitExceeded: 400,
    errors.PayloadTooLarge: 413,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.PaymentRequired: 402,
    errors.TooManyRequests: 429,
    errors.PreconditionFailed: 412,
    errors.Unavailable: 503,
    errors.InvariantViolation: 500,
}


def status_for(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _instance(request: Request) -> str | None:
    rid = request.headers.get("x-request-id")
    return f"urn:request:{rid}" if rid else None


async def domain_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DomainError)
    status = status_for(exc)
    if status >= 500 and status != 503:
        log.error("internal error on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(status, instance=_instance(request))
    headers = {"Retry-After": "1"} if status == 503 else problem_headers(exc)
    return problem_response(
        status,
        exc.detail,
        extensions=exc.extensions or None,
        instance=_instance(request),
        headers=headers,
        top=_v1(request, exc, status),
    )


def _v1(request: Request, exc: errors.DomainError | None, status: int) -> dict[str, object]:
    """`/v1` problems also carry ``code`` and ``field`` at the top (catalog.md §1)."""
    return problem_fields(exc, status) if is_v1(request.url.path) else {}


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return problem_response(
        exc.status_code,
        detail,
        headers=dict(exc.headers) if exc.headers else None,
        top=_v1(request, None, exc.status_code),
    )


async def decode_error_handler(request: Request, exc: Exception) -> Response:
    """msgspec validation errors name the path of the offending field, e.g. ``$[3].subject``."""
    return problem_response(400, f"invalid request body: {exc}", top=_v1(request, None, 400))


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, instance=_instance(request))


EXCEPTION_HANDLERS = {
    errors.DomainError: domain_error_handler,
    HTTPException: http_exception_handler,
    msgspec.ValidationError: decode_error_handler,
    msgspec.DecodeError: decode_error_handler,
    Exception: unhandled_error_handler,
}


async def error_response(request: Request, exc: Exception) -> Response:
    """The answer :data:`EXCEPTION_HANDLERS` give ``exc``, for the ASGI fast paths that run
    outside Starlette's exception middleware (the handler of the nearest class in its MRO)."""
    for cls in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return await unhandled_error_handler(request, exc)  # not reached: Exception is mapped
