"""Response helpers with the exact content types OpenMeter's clients compare byte for byte."""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.responses import Response

from allotment.domain.decimals import plain

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


def _default(obj: Any) -> Any:
    raise TypeError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=_default)


def encode(payload: Any) -> bytes:
    return _encoder.encode(payload)


def num(value: Decimal) -> Decimal:
    """Decimals leave the system in plain form: ``99`` rather than ``99.000`` or ``9.9E+1``."""
    return plain(value)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(encode(payload), status_code=status, media_type=JSON, headers=headers)


def no_content() -> Response:
    return Response(b"", status_code=204)


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    extensions: dict[str, Any] | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    top: dict[str, Any] | None = None,
) -> Response:
    """``top``: extra top-level members (the `/v1` ``code`` and ``field``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extensions:
        body["extensions"] = extensions
    if top:
        body.update(top)
    return Response(encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)
