"""HTTP routes: ``POST /api/v1/events`` (ingest) and ``GET /api/v1/events`` (list).

Ingest has two entrances and one code path. The Starlette route (:func:`ingest`) takes every
request; the ASGI wrapper in front of it (:func:`ingest_fast_path`) takes only small, valid
bodies with an exact content type and declines everything else to the route, body replayed.
Both use the same three steps, and nothing else: the Content-Type table (``_SHAPES``),
:func:`decode_events` (decode and validate the whole body, all or nothing, into storable
events) and :func:`commit` (join the process's group commit and wait until durable). What
the wrapper adds is only the gate (is this request on the happy path?) and writing the 204
itself; every error answer is the route's, or the app's own exception mapping.

Why two entrances: the routed path costs the event loop about twice as much per small
request (Starlette's routing, the Request object, the middleware stack), and the event loop
shares the interpreter lock with the single writer thread. ``python -m bench.ingest_door``
(one valid event per request, straight to the ASGI callable, commit stubbed out) measured on
2026-12-03, shared 2-core machine: routed 127 µs, fast path 64 µs per request (median of 5
rounds of 3000; ratio 1.98).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment.domain import limits, nul_text
from allotment.domain.errors import InvalidInput, PayloadTooLarge
from allotment.domain.events import (
    CloudEvent,
    PreparedEvent,
    build_event,
    stored_time,
    validate_batch,
)
from allotment.domain.json_bounds import checked_decimal, exact_decimal, too_deep, violation
from allotment.domain.timeutil import format_rfc3339, to_micros
from allotment.http.params import get_bool, get_int, get_str, get_time, is_digits, read_body
from allotment.http.problems import error_response
from allotment.http.responses import json_response, no_content
from allotment.http.runtime import call, container
from allotment.services.events import EventQuery, prepare

if TYPE_CHECKING:
    from allotment.container import Container

Shape = Literal["single", "batch", "any"]
_SHAPES: dict[str, Shape] = {
    "application/cloudevents+json": "single",
    "application/cloudevents-batch+json": "batch",
    "application/json": "any",
}

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _EventIn(msgspec.Struct, omit_defaults=True, gc=False):
    """The fast path: a typed decode. Anything it rejects is re-checked field by field.

    The envelope's fixed values (``specversion``, ``datacontenttype``) and non-empty strings
    are checked by the decoder itself (a body that breaks them takes the slow path, which
    words the error). The fields are in :meth:`CloudEvent.to_wire` order and unset ones are
    omitted, so once
    validated (and ``time`` set to its stored form) a decoded event encodes to exactly the
    stored JSON, without building a dict. ``gc=False``: its fields are strings, ``None`` and
    the ``data`` dict, which cannot point back to it, so the collector need not track the
    thousand of them a batch makes (fewer collections while a blast is decoded).
    """

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    subject: NonEmpty
    time: str | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: NonEmpty | None = None
    data: dict[str, Any] | None = None


_typed = msgspec.json.Decoder(list[_EventIn] | _EventIn, float_hook=checked_decimal)
"""Numbers are checked as they are decoded (``json_bounds.checked_decimal``: no cost for
integers and short numbers); one out of range fails the typed decode, and the slow path
names it by its path."""
_untyped = msgspec.json.Decoder(float_hook=exact_decimal)
_stored = msgspec.json.Encoder(decimal_format="number")

_INT_BOUND = 10**limits.NUMBER_INTEGER_DIGITS_MAX
_KEYS_MAX = limits.JSON_OBJECT_KEYS_MAX

_INLINE_BODY_BYTES = 16 * 1024
"""Bodies up to this size are decoded on the event loop (a few events: cheaper than a hop to
the thread pool); larger ones on the thread pool."""


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


def decode_events(body: bytes, shape: Shape, c: Container) -> list[PreparedEvent]:
    """Decode and validate a whole request body (all or nothing) into storable events."""
    if not body.strip():
        raise InvalidInput(
            "request body is empty; a CloudEvent or an array is required", field="body"
        )
    now = c.clock.now()
    if nul_text.spells_nul(body):  # rare: decode once more to name where the NUL is
        try:
            decoded = _untyped.decode(body)
            nul_text.check_value(decoded, "events" if isinstance(decoded, list) else "event")
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass  # the decodes below name what is wrong with it
    try:
        typed = _typed.decode(body)
    except msgspec.ValidationError:
        typed = None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc
    except RecursionError:
        raise too_deep() from None
    if typed is None:
        # slow path: find and name the offending event and field
        try:
            payload = _untyped.decode(body)
        except msgspec.ValidationError as exc:  # a number no Decimal can hold
            raise InvalidInput(f"request body: {exc}", field="body") from exc
        except msgspec.DecodeError as exc:  # the typed decode stopped at a field before this
            raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc
        except RecursionError:
            raise too_deep() from None
        if not isinstance(payload, list | dict):
            raise InvalidInput("request body must be a CloudEvent object or an array", field="body")
        _check_shape(payload, shape)
        if isinstance(payload, dict):
            return [prepare(e) for e in validate_batch([payload], now, single=True)]
        return [prepare(e) for e in validate_batch(payload, now)]
    _check_shape(typed, shape)
    if isinstance(typed, _EventIn):
        return _prepare([typed], now, single=True)
    return _prepare(typed, now, single=False)


async def commit(events: Sequence[PreparedEvent], c: Container) -> None:
    """Queue a validated batch for the process's group commit and wait until it is durable
    (:meth:`EventService.submit`, with a future of this event loop: the writer wakes the loop
    once per group, ``GroupCommitter.submit_to_loop``); a failed commit raises here."""
    await c.events.committer.submit_to_loop(events, asyncio.get_running_loop())


def _decode_and_fold(body: bytes, shape: Shape, c: Container) -> Sequence[PreparedEvent]:
    """Off the event loop: decode, validate, and fold the batch's rollup rows (so the single
    writer only writes; see ``EventService.prefold``)."""
    return c.events.prefold(decode_events(body, shape, c))


def _prepare(events: list[_EventIn], now: Any, *, single: bool) -> list[PreparedEvent]:
    """The common case in one tight loop; an event it cannot vouch for goes through
    :func:`build_event`, which raises the exact error or normalizes it.

    A ``data`` object whose values are all plain (strings, integers in range, decimals — the
    decoder's number hook checked those —, booleans, nulls) and not too many is within the
    JSON bounds at any depth this door sees; only another one is walked by
    :func:`~allotment.domain.json_bounds.violation`. That check inline instead of a call per
    event: decode + validate of the bench's 1000-event bodies 2.20 -> 2.05 µs per event
    (in process, best of 7, the two loops alternating; 2026-12-07)."""
    now_at: tuple[int, str] | None = None  # formatted once, and only for an event without time
    encode = _stored.encode
    out: list[PreparedEvent] = []
    append = out.append
    depth = 2 if single else 3  # where data sits in the body (limits.JSON_DEPTH_MAX)
    bound = _INT_BOUND
    index = -1
    for e in events:
        index += 1
        text = e.time
        at: tuple[int, str] | None
        if text is None:
            if now_at is None:
                now_at = (to_micros(now), format_rfc3339(now))
            at = now_at
        else:
            at = stored_time(text)
        data = e.data
        plain = True
        if data is not None:
            if len(data) > _KEYS_MAX:
                plain = False
            else:
                for value in data.values():
                    kind = value.__class__
                    if (
                        kind is str
                        or kind is Decimal
                        or value is None
                        or kind is bool
                        or (kind is int and -bound < value < bound)
                    ):
                        continue
                    plain = False
                    break
        if at is None or (not plain and violation(data, depth, decimals_checked=True) is not None):
            append(prepare(_build(e, "event" if single else f"events[{index}]", now, depth)))
            continue
        us, e.time = at
        append((e.source, e.id, e.type, e.subject, us, encode(e).decode(), data))
    return out


def _build(e: _EventIn, label: str, now: Any, depth: int) -> CloudEvent:
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
        depth=depth,
    )


async def ingest(request: Request) -> Response:
    """204 only once every event of the body is committed (or was already stored).

    Decoding and validation happen here, before anything is queued, so a bad request is
    answered 400 without touching the database; the valid batch then joins the process's
    group commit (:meth:`EventService.submit`) and this answer waits for that commit.
    """
    c = container(request)
    shape = body_shape(request.headers.get("content-type"))
    body = await read_body(request, c.settings.max_body_bytes)
    events: Sequence[PreparedEvent]
    if len(body) <= _INLINE_BODY_BYTES:
        events = decode_events(body, shape, c)
    else:
        events = await call(_decode_and_fold, body, shape, c)
    await commit(events, c)
    return no_content()


_FAST_SHAPES: dict[bytes, Shape] = {k.encode(): v for k, v in _SHAPES.items()}


def ingest_fast_path(app: ASGIApp, c: Container) -> ASGIApp:
    """Wrap the application so that a small, valid ``POST /api/v1/events`` skips Starlette's
    routing, request object and middleware (≈ 60 µs of the event loop's time per request,
    which the single writer thread needs too: the interpreter lock is shared). Only the happy
    path is answered here: an exact content type from the contract (the first Content-Type
    header), a declared length up to :data:`_INLINE_BODY_BYTES` and the configured body
    limit, a body :func:`decode_events` accepts, then the group commit — with the route's own
    answer (204, no headers, empty body). Anything else goes to ``app`` with the body
    replayed, so every error answer stays the route's; a commit that fails is answered by the
    app's own exception handlers (:func:`error_response`), not retried.
    """

    async def fast(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != "/api/v1/events"
            or scope.get("root_path")
        ):
            await app(scope, receive, send)
            return
        content_type: bytes | None = None
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:  # the first, as the route reads
                content_type = value
            elif name == b"content-length":
                length = int(value) if is_digits(value) else -1
        shape = _FAST_SHAPES.get(content_type or b"")
        if shape is None or not 0 < length <= min(_INLINE_BODY_BYTES, c.settings.max_body_bytes):
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False) or size > _INLINE_BODY_BYTES:
                break
        body = b"".join(chunks)
        more = bool(message.get("more_body", False))
        events: list[PreparedEvent] | None = None
        if size == length and not more:
            try:
                events = decode_events(body, shape, c)
            except Exception:  # the route answers (and words) every invalid body itself
                events = None
        if events is None:
            await app(scope, _replay(body, more, receive), send)
            return
        try:
            await commit(events, c)
        except Exception as exc:  # not retried: the app's own mapping answers (503, 500)
            request = Request(scope, _replay(body, more, receive))
            await (await error_response(request, exc))(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return fast


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that first hands out the body already read, then the rest of the stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


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
