"""Who may open the console, and the CSRF check of its forms (docs/console.md, docs/security.md).

The guard lets ``/console`` through (:data:`~allotment.domain.api_keys.CONSOLE`): a browser
cannot send ``Authorization`` on a link, so every console page calls :func:`admit` itself.

* ``ALLOTMENT_AUTH=off``: open (behind a gateway that authenticates).
* No key exists yet (``auto``): open to requests addressed to a loopback name, as the API is;
  403 for any other ``Host``.
* Otherwise an admin key, either sent as a header (``Authorization: Bearer`` or
  ``X-API-KEY``, for scripts) or traded at ``/console/login`` for a session cookie
  (:class:`~allotment.services.console_sessions.ConsoleSessions`). No credential: a page
  redirects to the login form, a form post is a 401 page. A live key with another scope: 403.

Forms (POST) carry a CSRF token: the value of a random ``SameSite=Strict`` cookie set by the
first console page, repeated in a hidden field (double submit). A cross-site page can post a
form to the console but cannot read the cookie, and the browser does not send a Strict cookie
(neither the token nor the session) with a cross-site post; a present ``Origin`` must name the
request's own host too.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from allotment.domain.api_keys import ApiKey, AuthMode, Scope, bearer_or_header
from allotment.http.guard import AUTH_OFF_ACTOR, loopback_host
from allotment.http.runtime import container as container_of

SESSION_COOKIE = "allotment_console"
CSRF_COOKIE = "allotment_console_csrf"
CSRF_FIELD = "csrf"
FORM_BYTES_MAX = 16 * 1024
"""A console form body is a few short fields; more is refused (413) before parsing."""
NO_KEYS_ACTOR = "(no keys)"


@dataclass(frozen=True)
class Actor:
    """Who is using the console: the admin key (by name), or the open modes' stand-in."""

    name: str
    key: ApiKey | None
    csrf: str
    """The CSRF token to put in this page's forms."""
    new_csrf: bool
    """The token is new: the response sets its cookie."""
    audited: bool
    """Changes are recorded in the audit trail (a key, or auth off), as the guard does."""
    session: bool = False
    """Logged in through the form (a logout button makes sense)."""


class Refused(Exception):
    """A console request that must not go on: the response to send instead."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def csrf_token(request: Request) -> tuple[str, bool]:
    """This browser's CSRF token and whether it is new (no valid cookie yet)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) == 43 and cookie.replace("-", "").replace("_", "").isalnum():
        return cookie, False
    return secrets.token_urlsafe(32), True


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookies(request: Request, response: Response, actor: Actor) -> Response:
    if actor.new_csrf:
        set_csrf_cookie(request, response, actor.csrf)
    return response


def set_csrf_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, token, path="/console", httponly=True, samesite="strict",
        secure=secure(request),
    )  # fmt: skip


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)


async def auth_on(request: Request) -> bool:
    """Whether this request needs a key: auth not off, and required or a key exists."""
    container = container_of(request)
    mode = container.settings.auth_mode
    if mode is not AuthMode.AUTO:
        return mode is AuthMode.REQUIRED
    known = container.api_keys.cached_keys_exist()
    return known if known is not None else await run_in_threadpool(container.api_keys.keys_exist)


async def admit(request: Request, problem: type[Exception]) -> Actor:
    """The actor of this request, or raise ``problem(status, message)`` (rendered as a page by
    the caller) or :class:`Refused` (a redirect to the login form)."""
    container = container_of(request)
    token, new = csrf_token(request)
    if container.settings.auth_mode is AuthMode.OFF:
        return Actor(AUTH_OFF_ACTOR, None, token, new, audited=True)
    keys = container.api_keys
    if not await auth_on(request):
        host = request.headers.get("host")
        if host is not None and not loopback_host(host):
            raise problem(
                403,
                f"Host {host} is not a loopback name: without API keys the console, like the "
                "API, answers only requests addressed to localhost; create an admin key "
                "(allotment api-keys create --name admin --scope admin) to serve other names",
            )
        return Actor(NO_KEYS_ACTOR, None, token, new, audited=False)
    presented = bearer_or_header(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    if presented is not None:
        found = keys.cached(presented)
        key = (
            await run_in_threadpool(keys.authenticate, presented)
            if not isinstance(found, ApiKey)
            else found
        )
        if key is None:
            raise problem(401, "unknown or revoked API key: the console needs a live admin key")
        return Actor(key.name, _admin(key, problem), token, new, audited=True)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        key = await run_in_threadpool(container.console_sessions.key_of, secret)
        if key is not None:
            return Actor(key.name, key, token, new, audited=True, session=True)
    if request.method in ("GET", "HEAD"):
        raise Refused(login_redirect(request))
    raise problem(401, "not logged in (or the session ended): log in with an admin key")


def _admin(key: ApiKey, problem: type[Exception]) -> ApiKey:
    if key.scope is not Scope.ADMIN:
        raise problem(
            403, f"API key {key.name!r} has scope {key.scope.value}; the console needs scope admin"
        )
    return key


async def read_form(request: Request, problem: type[Exception]) -> dict[str, str]:
    """The posted form's fields (first value of each), after the size and CSRF checks."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise problem(403, f"Origin {origin} is not this console's: a cross-site form post")
    elif origin == "null":
        raise problem(403, "Origin null: a form post from an opaque origin is refused")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise problem(415, f"Content-Type {media or '(none)'}: the console's forms are url-encoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES_MAX:
            raise problem(413, f"form body: at most {FORM_BYTES_MAX} bytes")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise problem(400, "form body: not UTF-8") from exc
    form = {name: values[0] for name, values in parsed.items()}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.pop(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise problem(
            403,
            "the form's CSRF token does not match this browser's: reload the page and try again",
        )
    return form


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console/customers"
