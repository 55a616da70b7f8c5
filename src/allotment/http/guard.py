"""The outermost ASGI layer: API keys and scopes, request content types, the audit trail.

It runs before the fast paths and Starlette's routing, so every request passes it:

1. **Authentication** (docs/security.md): unless the route is public or a portal route
   (:mod:`allotment.http.auth_policy`), and while authentication is on (a key exists, or
   ``ALLOTMENT_AUTH=required``), the request must carry a live key as
   ``Authorization: Bearer <key>`` or ``X-API-KEY: <key>`` — 401 otherwise, with
   ``WWW-Authenticate`` — whose scope the route accepts — 403 otherwise. Both problems name the
   scopes that would do (``extensions.requiredScopes``). While it is off because no key
   exists yet (``auto``), only requests addressed to a loopback name (the Host header) are
   served: a DNS-rebinding page cannot reach an unauthenticated local server (403). The
   console's pages (``/console``) check their own session cookie or key the same way
   (:mod:`allotment.http.console.access`).
2. **No NUL in the path or the query** (``domain/nul_text.py``): a 400 naming the parameter.
   JSON bodies are checked where they are decoded (``http/params.py``, the events route).
3. **Content types**: a POST, PUT, PATCH or DELETE that carries a body, or names a
   Content-Type at all, must be ``application/json`` (or a CloudEvents type on the ingest
   route): 415 otherwise. Browsers send ``text/plain`` and form bodies cross-site without a
   preflight; JSON needs one, and no route but the portal's answers preflights. The
   console's forms are form bodies: a CSRF token, checked by the console, answers that threat.
4. **Audit**: a successful change on an admin route is recorded (key, method, route, resource,
   status, the resource before — a GET of it through the app — and the response body after)
   before the answer is sent; when a key authenticated it, or with ``ALLOTMENT_AUTH=off``
   (behind a gateway). A local server that has no key yet records nothing (no one to name,
   and every admin write would cost a second write transaction).

A cache hit of the key lookup costs no IO; a miss reads the key's row on the thread pool.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment.domain import nul_text
from allotment.domain.api_keys import (
    ADMIN,
    INGEST,
    ApiKey,
    AuthMode,
    Requirement,
    bearer_or_header,
    scopes_text,
)
from allotment.domain.errors import InvalidInput
from allotment.http.auth_policy import CHANGE, requirement
from allotment.http.problems import error_response
from allotment.http.responses import problem_response
from allotment.services.api_keys import MISS, ApiKeyService
from allotment.services.audit import AuditService, Change, snapshot

JSON_TYPES = frozenset({"application/json"})
EVENT_TYPES = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)
WWW_AUTHENTICATE = 'Bearer realm="allotment", charset="UTF-8"'
AUTH_OFF_ACTOR = "(auth off)"

log = logging.getLogger("allotment.audit")


def _problem(status: int, detail: str, req: Requirement) -> Response:
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if status == 401 else None
    return problem_response(
        status, detail, extensions={"requiredScopes": req.needed()}, headers=headers
    )


def _missing(req: Requirement, method: str, path: str) -> Response:
    return _problem(
        401,
        f"missing API key: {method} {path} needs a key with scope "
        f"{scopes_text(req.needed())}, sent as Authorization: Bearer <key> or X-API-KEY: <key>",
        req,
    )


def _unknown(req: Requirement) -> Response:
    return _problem(
        401,
        "unknown or revoked API key (Authorization: Bearer <key> or X-API-KEY: <key>); "
        f"this route needs scope {scopes_text(req.needed())}",
        req,
    )


def _forbidden(req: Requirement, key: ApiKey, method: str, path: str) -> Response:
    return _problem(
        403,
        f"API key {key.name!r} has scope {key.scope.value}; {method} {path} needs scope "
        f"{scopes_text(req.needed())}",
        req,
    )


def _content_type_problem(req: Requirement, content_type: str | None) -> Response | None:
    allowed = EVENT_TYPES if req is INGEST else JSON_TYPES
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in allowed:
        return None
    shown = content_type if content_type else "(none)"
    return problem_response(
        415,
        f"Content-Type: {shown} is not accepted for a request body; send "
        f"{scopes_text(sorted(allowed))}",
        extensions={"field": "Content-Type", "accepted": sorted(allowed)},
    )


def _nul_problem(path: str, query: bytes) -> InvalidInput | None:
    """The 400 when the (decoded) path or a query parameter holds U+0000 (PostgreSQL refuses it
    in text; it names nothing on either engine), answered through the app's one error map."""
    where = None
    if nul_text.NUL in path:
        where = "path"
    elif b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if nul_text.NUL in name or nul_text.NUL in value:
                where = name.replace(nul_text.NUL, "\\u0000")
                break
    if where is None:
        return None
    shown = where if where == "path" else f"query parameter {where}"
    return InvalidInput(f"{shown}: {nul_text.RULE}", field=where)


@functools.lru_cache(maxsize=256)
def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (``localhost``, ``127.x.y.z``,
    ``[::1]``, any port). Kept for the last 256 names: every request of a local server
    asks it, of the same few names."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost") or name == "::1":
        return True
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


def _not_loopback(host: str) -> Response:
    return problem_response(
        403,
        f"Host {host} is not a loopback name: without API keys this server answers only "
        "requests addressed to localhost (a web page that rebinds its own name to 127.0.0.1 "
        "must not reach it); create an API key to serve other names",
        extensions={"field": "Host"},
    )


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeyService,
        audit: AuditService,
        mode: AuthMode,
        routes: list[BaseRoute],
    ) -> None:
        self.app = app
        self.keys = keys
        self.audit = audit
        self.mode = mode
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        req = requirement(method, path)
        authorization = x_api_key = content_type = host = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                x_api_key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                has_body = has_body or value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        key: ApiKey | None = None
        if not (req.public or req.portal or req.console) and self.mode is not AuthMode.OFF:
            on = self.mode is AuthMode.REQUIRED
            try:
                if not on:
                    known = self.keys.cached_keys_exist()
                    on = (
                        known
                        if known is not None
                        else await run_in_threadpool(self.keys.keys_exist)
                    )
                presented = bearer_or_header(authorization, x_api_key) if on else None
                found = None if presented is None else self.keys.cached(presented)
                if found is MISS:
                    assert presented is not None
                    found = await run_in_threadpool(self.keys.authenticate, presented)
            except Exception as exc:  # the database is down (503) or a bug (500): the app's map
                await (await error_response(Request(scope), exc))(scope, receive, send)
                return
            if not on and host is not None and not loopback_host(host):
                await _not_loopback(host)(scope, receive, send)
                return
            if on:
                if presented is None:
                    await _missing(req, method, path)(scope, receive, send)
                    return
                if not isinstance(found, ApiKey):
                    await _unknown(req)(scope, receive, send)
                    return
                if not req.allows(found.scope):
                    await _forbidden(req, found, method, path)(scope, receive, send)
                    return
                key = found
        nul = _nul_problem(path, scope.get("query_string", b""))
        if nul is not None:
            await (await error_response(Request(scope), nul))(scope, receive, send)
            return
        own_body = req.portal or req.console  # the portal's preflights, the console's forms
        if method in CHANGE and not own_body and (has_body or content_type is not None):
            problem = _content_type_problem(req, content_type)
            if problem is not None:
                await problem(scope, receive, send)
                return
        if req is ADMIN and method in CHANGE and (key is not None or self.mode is AuthMode.OFF):
            await self._audited(scope, receive, send, key)
            return
        await self.app(scope, receive, send)

    # ------------------------------------------------------------------ audit

    def _route_template(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", scope["path"]))
        return str(scope["path"])

    async def _get(self, scope: Scope, path: str) -> bytes | None:
        """The app's 200 JSON answer to a GET of ``path`` (the state before a change)."""
        get_scope = {
            **scope,
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(k, v) for k, v in scope["headers"] if k == b"host"],
        }
        status = 0
        chunks: list[bytes] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(get_scope, receive, send)
        except Exception:  # the app logged it; the change itself is answered by the route
            return None
        return b"".join(chunks) if status == 200 else None

    async def _audited(
        self, scope: Scope, receive: Receive, send: Send, key: ApiKey | None
    ) -> None:
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/") or "/"
        if method == "POST":  # an action on a resource (…/{id}/reset): the resource before
            parent = path.rsplit("/", 1)[0]
            before = await self._get(scope, parent) if parent.count("/") >= 3 else None
        else:
            before = await self._get(scope, path)
        held: list[Message] = []
        status = 0
        body: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, receive, hold)
        except BaseException:
            for message in held:  # the app's own error answer, unaudited: nothing changed
                await send(message)
            raise
        if 200 <= status < 300:
            change = Change(
                actor=key.name if key is not None else AUTH_OFF_ACTOR,
                key_id=key.id if key is not None else None,
                method=method,
                route=self._route_template(scope),
                resource=scope["path"],
                status=status,
                before=snapshot(before),
                after=snapshot(b"".join(body)),
            )
            try:
                await run_in_threadpool(self.audit.record, change)
            except Exception:  # the change is made: say so, but never lose it silently
                log.exception("could not record audit event for %s %s", method, path)
        for message in held:
            await send(message)


def guard(app: ASGIApp, **kwargs: Any) -> ASGIApp:
    return Guard(app, **kwargs)
