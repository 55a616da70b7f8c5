"""The conventions of `/v1` (catalog.md §1), in one place for every `/v1` route.

* Lists are ``{"data": [...], "next_cursor": "..." | null}`` with ``limit`` (1..1000, default
  100) and an opaque ``cursor`` (the sort key of the last item of the previous page).
* Decimals leave as JSON strings in plain form (``"600"``).
* Problems (rendered by ``http/problems.py``, the one error mapping) carry ``code`` (the
  error's upper-case code) and ``field`` at the top level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from starlette.datastructures import QueryParams

from allotment.domain import limits
from allotment.domain.decimals import plain
from allotment.domain.errors import DomainError, InvalidInput
from allotment.http.params import get_int, get_str

PREFIX = "/v1/"
T = TypeVar("T")

_CODES_BY_STATUS = {
    400: "INVALID_INPUT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    503: "UNAVAILABLE",
}


def is_v1(path: str) -> bool:
    return path.startswith(PREFIX)


def problem_fields(exc: DomainError | None, status: int) -> dict[str, Any]:
    """The top-level ``code`` (and ``field``) a `/v1` problem carries."""
    code = _CODES_BY_STATUS.get(status, "ERROR")
    if exc is not None and exc.code != "error":
        code = exc.code.upper()
    out: dict[str, Any] = {"code": code}
    if exc is not None and exc.field:
        out["field"] = exc.field
    return out


def page(q: QueryParams) -> tuple[int, str | None]:
    """``limit`` (1..1000, default 100) and ``cursor``."""
    limit = get_int(q, "limit", limits.PAGE_SIZE_DEFAULT, minimum=1, maximum=limits.PAGE_SIZE_MAX)
    assert limit is not None
    return limit, get_str(q, "cursor")


def listing(
    rows: Sequence[T], limit: int, render: Callable[[T], Any], cursor_of: Callable[[T], str]
) -> dict[str, Any]:
    """``rows`` holds up to ``limit`` + 1 items; the extra one only says there is more."""
    shown = rows[:limit]
    more = len(rows) > limit and bool(shown)
    return {
        "data": [render(r) for r in shown],
        "next_cursor": cursor_of(shown[-1]) if more else None,
    }


def dec(value: Decimal) -> str:
    return str(plain(value))


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    return body
