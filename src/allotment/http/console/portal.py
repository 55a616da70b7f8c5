"""The customer usage page at ``/console/portal``, opened with a portal token (docs/console.md,
"The customer's usage page").

A link to the page carries the token in its **fragment** (``/console/portal#token=…``), which
the browser never sends: nothing writes it to an access log or a ``Referer``. The page's few
lines of script (``static/portal.js``) move it into the page's form and post it once; the
server checks it (:meth:`~allotment.services.portal.PortalService.verify`) and keeps it in an
``HttpOnly``, ``SameSite=Strict`` cookie scoped to this path, then redirects to the page. A
script may instead send ``Authorization: Bearer <token>`` on the GET. Every request checks the
token again (an invalidation works at once). No parameter names whose page it is: the token
alone decides (:mod:`.portal_view`), and a token opens nothing else of the console.

A missing token shows the form (paste the token: the page works without script); a wrong,
expired or invalidated one is a 401 page that says which.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allotment.domain.errors import DomainError, Unauthorized
from allotment.domain.timeutil import to_micros
from allotment.http.console import access
from allotment.http.console.portal_view import usage_view
from allotment.http.console.render import ConsoleProblem, render
from allotment.http.problems import status_for
from allotment.http.runtime import call, container
from allotment.storage.portal_repo import PortalTokenRecord

log = logging.getLogger("allotment.http")
PATH = "/console/portal"
COOKIE = "allotment_portal"
TOKEN_FIELD = "token"


def _presented(request: Request) -> tuple[str | None, bool]:
    """The token this request carries and whether it came from the cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("malformed Authorization header (expected: Bearer <portal token>)")
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def _open_page(
    request: Request, status: int = 200, error: str | None = None, forget: bool = False
) -> Response:
    """The form that takes a token (and, with ``error``, why the last one was refused)."""
    csrf, new = access.csrf_token(request)
    response = render(
        request, None, "portal_open.html", status=status, status_code=status, csrf=csrf,
        error=error, token_field=TOKEN_FIELD,
    )  # fmt: skip
    if new:
        access.set_csrf_cookie(request, response, csrf)
    if forget:
        response.delete_cookie(COOKIE, path=PATH)
    return response


def _refused(request: Request, exc: DomainError, from_cookie: bool) -> Response:
    status = status_for(exc)
    if status >= 500 and status != 503:
        log.error("internal error on %s %s: %s", request.method, request.url.path, exc)
        return _open_page(request, status, "internal error (logged)")
    if status == 401:
        detail = f"This usage link does not open: {exc.detail}. Ask for a new link."
        return _open_page(request, 401, detail, forget=from_cookie)
    return _open_page(request, status, exc.detail)


async def usage_page(request: Request) -> Response:
    from_cookie = False
    try:
        token, from_cookie = _presented(request)
        if token is None:
            return _open_page(request)
        c = container(request)
        record = await call(c.portal.verify, token)
        view: dict[str, Any] = await call(usage_view, c, record)
    except DomainError as exc:
        return _refused(request, exc, from_cookie)
    csrf, new = access.csrf_token(request)
    response = render(request, None, "portal.html", csrf=csrf, token_field=TOKEN_FIELD, **view)
    if new:
        access.set_csrf_cookie(request, response, csrf)
    return response


def _keep(request: Request, response: Response, token: str, record: PortalTokenRecord) -> None:
    now = container(request).clock.now()
    seconds = max(1, -(-(to_micros(record.expires_at) - to_micros(now)) // 1_000_000))
    response.set_cookie(
        COOKIE, token, max_age=seconds, path=PATH, httponly=True, samesite="strict",
        secure=access.secure(request),
    )  # fmt: skip


async def open_with_token(request: Request) -> Response:
    """The form's post: check the token, keep it in the cookie, show the page (303)."""
    try:
        fields = await access.read_form(request, ConsoleProblem)
    except ConsoleProblem as problem:
        return _open_page(request, problem.status, problem.detail)
    token = fields.get(TOKEN_FIELD, "").strip()
    if not token:
        return _open_page(request, 400, f"{TOKEN_FIELD}: required, the token of your link")
    try:
        record = await call(container(request).portal.verify, token)
    except DomainError as exc:
        return _refused(request, exc, from_cookie=False)
    response = RedirectResponse(PATH, status_code=303)
    _keep(request, response, token, record)
    return response


async def forget(request: Request) -> Response:
    """Drop the kept token (the page then asks for one)."""
    try:
        await access.read_form(request, ConsoleProblem)
    except ConsoleProblem as problem:
        return _open_page(request, problem.status, problem.detail)
    response = RedirectResponse(PATH, status_code=303)
    response.delete_cookie(COOKIE, path=PATH)
    return response


ROUTES: list[BaseRoute] = [
    Route(PATH, usage_page, methods=["GET"]),
    Route(PATH, open_with_token, methods=["POST"]),
    Route(PATH + "/forget", forget, methods=["POST"]),
]
