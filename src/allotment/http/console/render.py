"""Templates, their filters, and the wrapper every console page goes through.

:func:`page` turns a handler ``(request, actor) -> Response`` into a Starlette endpoint that
admits the request (:func:`~allotment.http.console.access.admit`), reads and checks a posted
form, renders a :class:`ConsoleProblem` (or any domain error a service raised) as a page in
words, and sets the CSRF cookie. Pages are answered with a strict Content-Security-Policy: the
console's own stylesheet and script only, no inline script, never framed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from allotment.domain.errors import DomainError
from allotment.http.console import access, charts
from allotment.http.console.access import Actor, Refused
from allotment.http.problems import status_for

log = logging.getLogger("allotment.http")
HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleProblem(Exception):
    """A request the console answers with an error page: status and the words to show."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def number(value: object, places: int | None = None) -> str:
    """A Decimal (or int) for people: thousands separated, no exponent, trailing zeros cut."""
    if value is None:
        return "—"
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
    text = f"{value:,f}"
    if "." in text and places is None:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.utcoffset() else "Z")


def when_short(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M")


def percent(used: Decimal | None, limit: Decimal | None) -> int:
    """How full a bar is, 0..100 (whole percent, rounded down; no limit or no usage: 0)."""
    if used is None or limit is None or limit <= 0:
        return 0
    share = used * 100 / limit
    return max(0, min(100, int(share)))


def query(base: Mapping[str, object], **changes: object) -> str:
    """``?…`` for a link: the page's current parameters with some changed (None drops one)."""
    merged = {k: v for k, v in {**base, **changes}.items() if v is not None and v != ""}
    return "?" + urlencode({k: str(v) for k, v in merged.items()}) if merged else "?"


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["num"] = number
ENV.filters["when"] = when
ENV.filters["when_short"] = when_short
ENV.globals["percent"] = percent
ENV.globals["query"] = query
ENV.globals["gauge"] = charts.gauge


def render(
    request: Request, actor: Actor | None, template: str, status: int = 200, **context: Any
) -> Response:
    html = ENV.get_template(template).render(
        request=request, actor=actor, csrf_field=access.CSRF_FIELD, **context
    )
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if actor is not None:
        access.set_cookies(request, response, actor)
    return response


def problem_page(request: Request, actor: Actor | None, status: int, detail: str) -> Response:
    return render(request, actor, "problem.html", status=status, status_code=status, detail=detail)


Handler = Callable[[Request, Actor], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        actor: Actor | None = None
        try:
            actor = await access.admit(request, ConsoleProblem)
            if request.method == "POST":
                request.state.form = await access.read_form(request, ConsoleProblem)
            return await handler(request, actor)
        except Refused as refused:
            return refused.response
        except ConsoleProblem as problem:
            return problem_page(request, actor, problem.status, problem.detail)
        except DomainError as exc:
            status = status_for(exc)
            if status >= 500 and status != 503:
                log.error("internal error on console %s %s: %s", request.method, request.url, exc)
                return problem_page(request, actor, status, "internal error (logged)")
            return problem_page(request, actor, status, exc.detail)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def form(request: Request) -> dict[str, str]:
    """The checked form of a POST (read by :func:`page` before the handler runs)."""
    fields: dict[str, str] = request.state.form
    return fields
