"""The console's login form, logout, and its static files (docs/console.md)."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allotment.domain.api_keys import Scope
from allotment.http.console import access
from allotment.http.console.access import Actor
from allotment.http.console.render import HERE, ConsoleProblem, form, page, render
from allotment.http.runtime import call, container


async def login_form(request: Request) -> Response:
    if not await access.auth_on(request):  # nothing to log in with: the console is open
        return RedirectResponse(access.safe_next(request.query_params.get("next")), 303)
    token, new = access.csrf_token(request)
    return _login(request, token, new, request.query_params.get("next"))


def _login(
    request: Request, token: str, new: bool, next_path: str | None, error: str | None = None,
    status: int = 200,
) -> Response:  # fmt: skip
    response = render(
        request, None, "login.html", status=status, csrf=token,
        next=access.safe_next(next_path), error=error,
    )  # fmt: skip
    if new:
        access.set_csrf_cookie(request, response, token)
    return response


async def login(request: Request) -> Response:
    """Trade an admin key for a session cookie (HttpOnly, SameSite=Strict, Secure on https)."""
    token, new = access.csrf_token(request)
    try:
        fields = await access.read_form(request, ConsoleProblem)
    except ConsoleProblem as problem:
        return _login(request, token, new, None, problem.detail, problem.status)
    next_path = fields.get("next")
    c = container(request)
    key = await call(c.api_keys.authenticate, fields.get("key", "").strip())
    if key is None:
        return _login(request, token, new, next_path, "Unknown or revoked API key.", 401)
    if key.scope is not Scope.ADMIN:
        detail = f"API key {key.name!r} has scope {key.scope.value}; the console needs admin."
        return _login(request, token, new, next_path, detail, 403)
    secret = await call(c.console_sessions.open, key)
    response = RedirectResponse(access.safe_next(next_path), status_code=303)
    response.set_cookie(
        access.SESSION_COOKIE, secret, max_age=c.console_sessions.seconds, path="/console",
        httponly=True, samesite="strict", secure=access.secure(request),
    )  # fmt: skip
    return response


@page
async def logout(request: Request, actor: Actor) -> Response:
    form(request)
    secret = request.cookies.get(access.SESSION_COOKIE)
    if secret:
        await call(container(request).console_sessions.close, secret)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(access.SESSION_COOKIE, path="/console")
    return response


STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
STATIC: dict[str, tuple[bytes, str]] = {
    path.name: (path.read_bytes(), STATIC_TYPES[path.suffix])
    for path in sorted((HERE / "static").iterdir())
    if path.suffix in STATIC_TYPES
}
"""The stylesheet and the script, read once (a few kilobytes), one route each: no directory
is served."""


def _static(name: str) -> Route:
    body, media = STATIC[name]
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}

    async def static_file(request: Request) -> Response:
        return Response(body, media_type=media, headers=headers)

    return Route(f"/console/static/{name}", static_file, methods=["GET"])


@page
async def home(request: Request, actor: Actor) -> Response:
    return RedirectResponse("/console/customers", status_code=303)


@page
async def not_found(request: Request, actor: Actor) -> Response:
    raise ConsoleProblem(404, f"no console page at {request.url.path}")


ROUTES: list[BaseRoute] = [
    Route("/console", home, methods=["GET"]),
    Route("/console/", home, methods=["GET"]),
    Route("/console/login", login_form, methods=["GET"]),
    Route("/console/login", login, methods=["POST"]),
    Route("/console/logout", logout, methods=["POST"]),
    *(_static(name) for name in STATIC),
]


class _AnyRest(Convertor[str]):
    """The rest of a path, newlines included (Starlette's ``path`` is ``.*``, which stops at a
    ``%0A``: such a path would miss the catch-all and get the API's JSON 404)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rest", _AnyRest())

LAST: list[BaseRoute] = [Route("/console/{path:rest}", not_found, methods=["GET"])]
"""After every other console route: an unknown console path is a page that says so."""
