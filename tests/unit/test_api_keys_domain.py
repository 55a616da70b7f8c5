"""API key rules (domain/api_keys.py): the secret's shape, its digest, names, scopes, headers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allotment.domain.api_keys import (
    DISPLAY_CHARS,
    SECRET_CHARS,
    AuthMode,
    bearer_or_header,
    check_name,
    digest_matches,
    display_prefix,
    format_secret,
    hash_secret,
    looks_like_secret,
    parse_auth_mode,
    parse_scope,
)
from allotment.domain.errors import InvalidInput


@given(st.binary(min_size=32, max_size=32))
def test_every_secret_has_the_recognisable_shape(raw: bytes) -> None:
    secret = format_secret(raw)
    assert secret.startswith("alm_")
    assert len(secret) == SECRET_CHARS == 47
    assert looks_like_secret(secret)
    assert display_prefix(secret) == secret[:DISPLAY_CHARS]
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert digest_matches(hash_secret(secret), secret)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_a_digest_matches_its_own_secret_only(a: bytes, b: bytes) -> None:
    sa, sb = format_secret(a), format_secret(b)
    assert digest_matches(hash_secret(sa), sb) == (a == b)


@pytest.mark.parametrize("size", [31, 33, 0])
def test_a_secret_needs_exactly_256_bits(size: int) -> None:
    with pytest.raises(ValueError, match="32 random bytes"):
        format_secret(b"\0" * size)


@pytest.mark.parametrize(
    "value",
    ["", "alm_", "alm_" + "a" * 42, "alm_" + "a" * 44, "xyz_" + "a" * 43, "alm_" + "a" * 42 + "=",
     "eyJhbGciOiJIUzI1NiJ9.e30.sig"],
)  # fmt: skip
def test_other_strings_are_not_secrets(value: str) -> None:
    assert not looks_like_secret(value)


def test_names() -> None:
    assert check_name("billing-backend.v2_1") == "billing-backend.v2_1"
    assert check_name("a" * 64) == "a" * 64
    for bad in ("", "a" * 65, "Upper", "-lead", "with space", None, 7):
        with pytest.raises(InvalidInput) as err:
            check_name(bad)
        assert err.value.field == "name"


def test_scopes_and_modes() -> None:
    assert [parse_scope(s).value for s in ("admin", "runtime", "read", "ingest")] == [
        "admin", "runtime", "read", "ingest"
    ]  # fmt: skip
    with pytest.raises(InvalidInput, match="scope: must be one of admin, runtime, read, ingest"):
        parse_scope("root")
    assert parse_auth_mode("REQUIRED") is AuthMode.REQUIRED
    with pytest.raises(InvalidInput, match="ALLOTMENT_AUTH"):
        parse_auth_mode("sometimes")


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer k1", None, "k1"),
        ("bearer   k1  ", None, "k1"),
        (None, "k2", "k2"),
        ("Bearer k1", "k2", "k2"),  # X-API-KEY wins when both are sent
        ("Basic dTpw", None, None),
        ("Bearer", None, None),
        ("", "", None),
        (None, None, None),
    ],
)
def test_the_presented_key(authorization: str | None, x_api_key: str | None,
                           expected: str | None) -> None:  # fmt: skip
    assert bearer_or_header(authorization, x_api_key) == expected


def test_auth_settings_from_the_environment() -> None:
    from allotment.config import ConfigError, Settings, apply_env, validate

    s = apply_env(Settings(), {"ALLOTMENT_AUTH": "Off", "ALLOTMENT_AUTH_CACHE_SECONDS": "60"})
    validate(s)
    assert s.auth_mode is AuthMode.OFF
    assert s.auth_cache_seconds == 60
    assert apply_env(Settings(), {}).auth_mode is AuthMode.AUTO
    with pytest.raises(ConfigError, match="ALLOTMENT_AUTH_CACHE_SECONDS must be between 0 and 60"):
        validate(apply_env(Settings(), {"ALLOTMENT_AUTH_CACHE_SECONDS": "60.5"}))
    with pytest.raises(ConfigError, match="ALLOTMENT_AUTH: must be one of auto, required, off"):
        apply_env(Settings(), {"ALLOTMENT_AUTH": "maybe"})
