"""Query-string and body parsing that names the offending parameter in every 400."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request

from allotment.domain import limits, nul_text
from allotment.domain.errors import InvalidInput, PayloadTooLarge
from allotment.domain.json_bounds import check_body, exact_decimal, too_deep
from allotment.domain.timeutil import parse_rfc3339

T = TypeVar("T")


def get_str(q: QueryParams, name: str) -> str | None:
    value = q.get(name)
    return value if value is not None and value != "" else None


def get_list(q: QueryParams, name: str) -> list[str]:
    return [v for v in q.getlist(name) if v != ""]


def get_bool(q: QueryParams, name: str, default: bool) -> bool:
    value = q.get(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidInput(f"query parameter {name}: {value!r} is not a boolean", field=name)


def get_int(
    q: QueryParams,
    name: str,
    default: int | None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = q.get(name)
    if value is None or value == "":
        return default
    number = parse_int(value, f"query parameter {name}", name)
    if minimum is not None and number < minimum:
        raise InvalidInput(
            f"query parameter {name}: must be >= {minimum}, got {number}", field=name
        )
    if maximum is not None and number > maximum:
        raise InvalidInput(
            f"query parameter {name}: must be <= {maximum}, got {number}", field=name
        )
    return number


def is_digits(text: str) -> bool:
    """Only ASCII digits, at least one (``str.isdigit`` also takes ``²`` and ``١``)."""
    return text.isascii() and text.isdigit()


_INT_TEXT = re.compile(r"-?[0-9]{1,20}")


def parse_int(value: str, what: str, field: str) -> int:
    """An integer written in ASCII digits with an optional ``-`` (not ``+1``, ``1_0``, ``١``,
    spaces), within ``±limits.QUERY_INT_MAX``."""
    if _INT_TEXT.fullmatch(value) is None:
        raise InvalidInput(f"{what}: {value[:40]!r} is not an integer", field=field)
    number = int(value)
    if not -limits.QUERY_INT_MAX <= number <= limits.QUERY_INT_MAX:
        raise InvalidInput(
            f"{what}: {number} is out of range; at most {limits.QUERY_INT_MAX} in absolute "
            "value (QUERY_INT_MAX)",
            field=field,
        )
    return number


def get_time(q: QueryParams, name: str) -> datetime | None:
    value = q.get(name)
    if value is None or value == "":
        return None
    return parse_rfc3339(value, f"query parameter {name}")


def get_enum(
    q: QueryParams, name: str, allowed: tuple[str, ...], default: str | None = None
) -> str | None:
    value = q.get(name)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise InvalidInput(
            f"query parameter {name}: {value!r} is not one of {', '.join(allowed)}", field=name
        )
    return value


def get_deep_object(q: QueryParams, name: str) -> dict[str, str]:
    """``filterGroupBy[model]=gpt-4`` style maps (OpenAPI deepObject)."""
    prefix = name + "["
    out: dict[str, str] = {}
    for key, value in q.multi_items():
        if key.startswith(prefix) and key.endswith("]"):
            sub = key[len(prefix) : -1]
            if not sub:
                raise InvalidInput(f"query parameter {key}: empty key", field=name)
            out[sub] = value
    return out


async def read_body(request: Request, max_bytes: int = limits.REQUEST_BODY_BYTES_MAX) -> bytes:
    """The whole body, refusing (413) anything over ``max_bytes`` before buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and is_digits(declared) and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes"
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or cut off as too slow (http/server_protocol.py)
        raise InvalidInput(
            f"request body: the connection closed after {size} bytes", field="body"
        ) from None
    return b"".join(chunks)


_exact = msgspec.json.Decoder(float_hook=exact_decimal)


def decode_json(body: bytes, type_: type[T] | Any = Any, *, exact: bool = False) -> Any:
    """Decode a JSON body; a malformed one is a 400 that says where it broke, and so is one
    past the JSON bounds (``json_bounds``: depth, keys per object, numbers in range).
    ``exact``: every non-integer number as an exact ``Decimal`` (else a float)."""
    if not body.strip():
        raise InvalidInput("request body is empty; a JSON document is required", field="body")
    try:
        payload = _exact.decode(body) if exact else msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid request body: {exc}", field="body") from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from exc
    except RecursionError:
        raise too_deep() from None
    nul_text.check_json(body, payload)
    return check_body(payload)


def require_json_object(payload: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput(f"{what} must be a JSON object", field="body")
    return payload
