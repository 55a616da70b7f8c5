"""HS256 portal tokens: round trip, and every way a forged or stale token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from allotment.domain.errors import Unauthorized
from allotment.domain.portal_tokens import (
    PortalClaims,
    b64url_decode,
    b64url_encode,
    encode_token,
    meter_allowed,
    verify_token,
)

SECRET = b"s3cret-for-tests"
NOW = 1_700_000_000
CLAIMS = PortalClaims(
    subject="customer-1",
    token_id="01JABCDEFGHJKMNPQRSTVWXYZ0",
    issued_at=NOW,
    expires_at=NOW + 3600,
    allowed_meter_slugs=("tokens_total",),
)


def _segment(obj: object) -> str:
    return b64url_encode(json.dumps(obj).encode())


def _sign(header: object, payload: object, secret: bytes = SECRET) -> str:
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(sig)}"


def _payload(token: str) -> dict[str, object]:
    return json.loads(b64url_decode(token.split(".")[1]))  # type: ignore[no-any-return]


def test_round_trip() -> None:
    token = encode_token(CLAIMS, SECRET)
    assert verify_token(token, SECRET, NOW) == CLAIMS


def test_claims_and_header_are_standard_jwt() -> None:
    token = encode_token(CLAIMS, SECRET)
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert _payload(token) == {
        "sub": "customer-1",
        "exp": NOW + 3600,
        "iat": NOW,
        "id": CLAIMS.token_id,
        "allowedMeterSlugs": ["tokens_total"],
    }
    assert "=" not in token


def test_signature_matches_an_independent_hmac() -> None:
    token = encode_token(CLAIMS, SECRET)
    head, payload, sig = token.split(".")
    expected = hmac.new(SECRET, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == expected


def test_unrestricted_token_has_no_slug_claim() -> None:
    claims = PortalClaims("s", "id1", NOW, NOW + 10, None)
    token = encode_token(claims, SECRET)
    assert "allowedMeterSlugs" not in _payload(token)
    assert verify_token(token, SECRET, NOW).allowed_meter_slugs is None


def test_tampered_signature_rejected() -> None:
    head, payload, sig = encode_token(CLAIMS, SECRET).split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(Unauthorized, match="bad signature"):
        verify_token(f"{head}.{payload}.{flipped}", SECRET, NOW)


def test_tampered_payload_rejected() -> None:
    head, _, sig = encode_token(CLAIMS, SECRET).split(".")
    forged = _segment({"sub": "someone-else", "exp": NOW + 3600, "iat": NOW, "id": CLAIMS.token_id})
    with pytest.raises(Unauthorized, match="bad signature"):
        verify_token(f"{head}.{forged}.{sig}", SECRET, NOW)


def test_wrong_secret_rejected() -> None:
    token = encode_token(CLAIMS, SECRET)
    with pytest.raises(Unauthorized, match="bad signature"):
        verify_token(token, b"another-secret", NOW)


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", ""])
def test_other_algorithms_rejected(alg: str) -> None:
    payload = {"sub": "s", "exp": NOW + 60, "iat": NOW, "id": "x"}
    unsigned = f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(payload)}."
    with pytest.raises(Unauthorized):
        verify_token(unsigned, SECRET, NOW)
    # even correctly HMAC-signed, a header that does not say HS256 is refused
    with pytest.raises(Unauthorized, match="algorithm"):
        verify_token(_sign({"alg": alg, "typ": "JWT"}, payload), SECRET, NOW)


def test_missing_alg_rejected() -> None:
    payload = {"sub": "s", "exp": NOW + 60, "iat": NOW, "id": "x"}
    with pytest.raises(Unauthorized, match="algorithm"):
        verify_token(_sign({"typ": "JWT"}, payload), SECRET, NOW)


def test_expired_at_exp_and_after() -> None:
    token = encode_token(CLAIMS, SECRET)
    assert verify_token(token, SECRET, CLAIMS.expires_at - 1) == CLAIMS
    for now in (CLAIMS.expires_at, CLAIMS.expires_at + 1):
        with pytest.raises(Unauthorized, match="expired"):
            verify_token(token, SECRET, now)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "...",
        "ab$.cd.ef",
        "eyJhbGciOiJIUzI1NiJ9.eyJ9.sig==",
        "é.é.é",
        "x" * 9000,
    ],
)
def test_malformed_rejected(token: str) -> None:
    with pytest.raises(Unauthorized):
        verify_token(token, SECRET, NOW)


@pytest.mark.parametrize(
    "payload",
    [
        {"exp": NOW + 60, "iat": NOW, "id": "x"},
        {"sub": "s", "iat": NOW, "id": "x"},
        {"sub": "s", "exp": "soon", "iat": NOW, "id": "x"},
        {"sub": "s", "exp": True, "iat": NOW, "id": "x"},
        {"sub": "s", "exp": NOW + 60, "iat": NOW},
        {"sub": "", "exp": NOW + 60, "iat": NOW, "id": "x"},
        {"sub": "s", "exp": NOW + 60, "iat": NOW, "id": "x", "allowedMeterSlugs": "m"},
        {"sub": "s", "exp": NOW + 60, "iat": NOW, "id": "x", "allowedMeterSlugs": [1]},
    ],
)
def test_signed_but_bad_claims_rejected(payload: dict[str, object]) -> None:
    with pytest.raises(Unauthorized):
        verify_token(_sign({"alg": "HS256", "typ": "JWT"}, payload), SECRET, NOW)


def test_non_object_payload_rejected() -> None:
    with pytest.raises(Unauthorized, match="malformed payload"):
        verify_token(_sign({"alg": "HS256"}, [1, 2]), SECRET, NOW)


def test_meter_allowed() -> None:
    assert meter_allowed(None, "anything")
    assert meter_allowed(("a", "b"), "b")
    assert not meter_allowed(("a",), "b")
