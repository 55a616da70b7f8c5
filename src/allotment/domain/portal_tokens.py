"""Portal tokens: HS256 JSON Web Tokens (RFC 7519), encoded and verified with the stdlib.

Only one algorithm exists here: ``HS256``. A token whose header names any other algorithm
(``none`` included) is refused before its signature is even looked at, and signatures are
compared in constant time. Pure: the caller passes the secret and "now" (epoch seconds).

Claims we issue: ``sub`` (the subject key), ``exp`` and ``iat`` (epoch seconds), ``id`` (the
token row id, checked against the database on every request) and, when restricted,
``allowedMeterSlugs``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allotment.domain.errors import Unauthorized

ALGORITHM = "HS256"
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
MAX_TOKEN_CHARS = 8192
"""Longer bearer strings are refused without decoding them."""


@dataclass(frozen=True)
class PortalClaims:
    subject: str
    token_id: str
    issued_at: int
    expires_at: int
    allowed_meter_slugs: tuple[str, ...] | None


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2); anything else is refused."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _json_segment(payload: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(payload, separators=(",", ":"), sort_keys=False).encode())


def _sign(signing_input: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def encode_token(claims: PortalClaims, secret: bytes) -> str:
    """The compact serialisation ``header.payload.signature``."""
    payload: dict[str, Any] = {
        "sub": claims.subject,
        "exp": claims.expires_at,
        "iat": claims.issued_at,
        "id": claims.token_id,
    }
    if claims.allowed_meter_slugs is not None:
        payload["allowedMeterSlugs"] = list(claims.allowed_meter_slugs)
    signing_input = f"{_json_segment(_HEADER)}.{_json_segment(payload)}"
    signature = _sign(signing_input.encode("ascii"), secret)
    return f"{signing_input}.{b64url_encode(signature)}"


def _decode_json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unauthorized(f"portal token: malformed {what}") from exc
    if not isinstance(value, dict):
        raise Unauthorized(f"portal token: malformed {what}")
    return value


def _int_claim(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"portal token: claim {name} is missing or not a number")
    return int(value)


def _str_claim(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise Unauthorized(f"portal token: claim {name} is missing or not a string")
    return value


def _slugs_claim(payload: dict[str, Any]) -> tuple[str, ...] | None:
    value = payload.get("allowedMeterSlugs")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise Unauthorized("portal token: claim allowedMeterSlugs is not a list of strings")
    return tuple(value)


def verify_token(token: str, secret: bytes, now_seconds: int) -> PortalClaims:
    """Check the signature first, then the claims; raise :class:`Unauthorized` on any flaw.

    ``now_seconds`` at or after ``exp`` means expired.
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("portal token: malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthorized("portal token: malformed token (expected header.payload.signature)")
    if not (parts[0] and parts[1]) or not all(_B64URL.match(part) for part in parts):
        raise Unauthorized("portal token: malformed token (not base64url)")
    header_b64, payload_b64, signature_b64 = parts
    header = _decode_json_segment(header_b64, "header")
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(f"portal token: algorithm {header.get('alg')!r} is not accepted")
    if "crit" in header:
        raise Unauthorized("portal token: critical header parameters are not supported")
    try:
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise Unauthorized("portal token: malformed signature") from exc
    expected = _sign(f"{header_b64}.{payload_b64}".encode("ascii"), secret)
    if not hmac.compare_digest(signature, expected):
        raise Unauthorized("portal token: bad signature")
    payload = _decode_json_segment(payload_b64, "payload")
    claims = PortalClaims(
        subject=_str_claim(payload, "sub"),
        token_id=_str_claim(payload, "id"),
        issued_at=_int_claim(payload, "iat"),
        expires_at=_int_claim(payload, "exp"),
        allowed_meter_slugs=_slugs_claim(payload),
    )
    if now_seconds >= claims.expires_at:
        raise Unauthorized("portal token: expired")
    return claims


def meter_allowed(allowed: Sequence[str] | None, meter_slug: str) -> bool:
    """No restriction means every meter."""
    return allowed is None or meter_slug in allowed
