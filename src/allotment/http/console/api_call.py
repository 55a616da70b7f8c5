"""The console's edits go through the public API: a form becomes the API request an operator
would have sent with curl, dispatched in process to the routed app (the same parsing,
validation, service call and problem+json), and its answer is read back.

The guard is not in that path (the console has admitted an admin already), so a successful
change is recorded in the audit trail here, as the guard would have: the console's actor,
the API's route and resource, the resource before (a GET of it) and the answer after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import Message, Scope

from allotment.http.console.access import Actor
from allotment.http.runtime import call, container
from allotment.services.audit import Change, snapshot

_ENCODER = msgspec.json.Encoder(decimal_format="number")
"""Decimals go out as JSON numbers, exactly as typed (a form's amount never becomes a float)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def words(self) -> str:
        """A problem+json answer in words: its status, title and detail (and field)."""
        try:
            problem = self.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            return f"the API answered {self.status}"
        title = problem.get("title") or f"status {self.status}"
        detail = problem.get("detail")
        text = f"{self.status} {title}" + (f": {detail}" if detail else "")
        field = problem.get("field")
        if field and (not detail or str(field) not in str(detail)):
            text += f" (field {field})"
        return text


async def _dispatch(request: Request, method: str, path: str, body: bytes | None) -> Answer:
    headers = [(b"host", request.headers.get("host", "localhost").encode("latin-1"))]
    if body is not None:
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
        "app": request.app,
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body or b"", "more_body": False}

    status = 0
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app(scope, receive, send)
    return Answer(status, b"".join(chunks))


def _template(request: Request, method: str, path: str) -> str:
    scope = {"type": "http", "method": method, "path": path}
    for route in request.app.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", path))
    return path


async def api(
    request: Request,
    actor: Actor,
    method: str,
    path: str,
    body: Any = None,
    *,
    before: str | None = None,
) -> Answer:
    """Send ``method path`` with ``body`` (JSON) to the API; record a success in the audit
    trail. ``before``: the resource to GET first for the trail's "before" (default: none)."""
    prior = await _dispatch(request, "GET", before, None) if before is not None else None
    raw = None if body is None else _ENCODER.encode(body)
    answer = await _dispatch(request, method, path, raw)
    if answer.ok and actor.audited:
        change = Change(
            actor=actor.name,
            key_id=actor.key.id if actor.key is not None else None,
            method=method,
            route=_template(request, method, path),
            resource=path,
            status=answer.status,
            before=snapshot(prior.body) if prior is not None and prior.status == 200 else None,
            after=snapshot(answer.body),
        )
        await call(container(request).audit.record, change)
    return answer
