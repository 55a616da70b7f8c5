"""HTTP routes: ``POST /api/v1/events`` (ingest) and ``GET /api/v1/events`` (list)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.errors import InvalidInput, PayloadTooLarge
from allotment.domain.events import CloudEvent, build_event, validate_batch
from allotment.http.params import get_bool, get_int, get_str, get_time, read_body
from allotment.http.responses import json_response, no_content
from allotment.http.runtime import call, container
from allotment.services.events import EventQuery

if TYPE_CHECKING:
    from allotment.container import Container

Shape = Literal["single", "batch", "any"]
_SHAPES: dict[str, Shape] = {
    "application/cloudevents+json": "single",
    "application/cloudevents-batch+json": "batch",
    "application/json": "any",
}

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _EventIn(msgspec.Struct):
    """The fast path: a typed decode. Anything it rejects is re-checked field by field."""

    specversion: str
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    subject: NonEmpty
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: dict[str, Any] | None = None


_typed = msgspec.json.Decoder(list[_EventIn] | _EventIn, float_hook=Decimal)
_untyped = msgspec.json.Decoder(float_hook=Decimal)


def body_shape(content_type: str | None) -> Shape:
    """Which body the Content-Type announces; parameters (``; charset=utf-8``) are ignored."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    shape = _SHAPES.get(media)
    if shape is None:
        shown = content_type if content_type else "(none)"
        raise InvalidInput(
            f"invalid content type: {shown}; use application/cloudevents+json, "
            "application/cloudevents-batch+json or application/json",
            field="Content-Type",
        )
    return shape


def _check_shape(payload: object, shape: Shape) -> None:
    if shape == "single" and isinstance(payload, list):
        raise InvalidInput(
            "request body: application/cloudevents+json takes one CloudEvent object; "
            "send an array as application/cloudevents-batch+json",
            field="body",
        )
    if shape == "batch" and not isinstance(payload, list):
        raise InvalidInput(
            "request body: application/cloudevents-batch+json takes a JSON array of CloudEvents",
            field="body",
        )
    if isinstance(payload, list) and len(payload) > limits.EVENTS_PER_BATCH_MAX:
        raise PayloadTooLarge(
            f"batch of {len(payload)} events exceeds the limit of "
            f"{limits.EVENTS_PER_BATCH_MAX} events per request"
        )


def decode_events(body: bytes, shape: Shape, c: Container) -> list[CloudEvent]:
    """Decode and validate a whole request body (all or nothing)."""
    if not body.strip():
        raise InvalidInput(
            "request body is empty; a CloudEvent or an array is required", field="body"
        )
    now = c.clock.now()
    try:
        typed = _typed.decode(body)
    except msgspec.ValidationError:
        typed = None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc
    if typed is None:
        # slow path: find and name the offending event and field
        payload = _untyped.decode(body)
        if not isinstance(payload, list | dict):
            raise InvalidInput("request body must be a CloudEvent object or an array", field="body")
        _check_shape(payload, shape)
        if isinstance(payload, dict):
            return validate_batch([payload], now, single=True)
        return validate_batch(payload, now)
    _check_shape(typed, shape)
    if isinstance(typed, _EventIn):
        return [_build(typed, "event", now)]
    return [_build(e, f"events[{i}]", now) for i, e in enumerate(typed)]


def _build(e: _EventIn, label: str, now: Any) -> CloudEvent:
    return build_event(
        label,
        specversion=e.specversion,
        id=e.id,
        source=e.source,
        type=e.type,
        subject=e.subject,
        time=e.time,
        datacontenttype=e.datacontenttype,
        dataschema=e.dataschema,
        data=e.data,
        now=now,
    )


def _ingest(c: Container, body: bytes, shape: Shape) -> None:
    c.events.ingest(decode_events(body, shape, c))


async def ingest(request: Request) -> Response:
    """204 only once every event of the body is committed (or was already stored)."""
    c = container(request)
    shape = body_shape(request.headers.get("content-type"))
    body = await read_body(request, c.settings.max_body_bytes)
    await call(_ingest, c, body, shape)
    return no_content()


async def list_events(request: Request) -> Response:
    q = request.query_params
    limit = get_int(
        q,
        "limit",
        limits.EVENTS_LIST_LIMIT_DEFAULT,
        minimum=1,
        maximum=limits.EVENTS_LIST_LIMIT_MAX,
    )
    has_error = get_bool(q, "hasError", False) if get_str(q, "hasError") is not None else None
    query = EventQuery(
        from_=get_time(q, "from"),
        to=get_time(q, "to"),
        ingested_at_from=get_time(q, "ingestedAtFrom"),
        ingested_at_to=get_time(q, "ingestedAtTo"),
        id=get_str(q, "id"),
        subject=get_str(q, "subject"),
        has_error=has_error,
        limit=limit if limit is not None else limits.EVENTS_LIST_LIMIT_DEFAULT,
    )
    return json_response(await call(container(request).events.list, query))


ROUTES: list[BaseRoute] = [
    Route("/api/v1/events", ingest, methods=["POST"]),
    Route("/api/v1/events", list_events, methods=["GET"]),
]
