"""API keys: scopes, what each scope may call, key names, and the secret's shape and hash.

Pure (stdlib only): the service draws the random bytes and reads the clock.

A secret is ``alm_`` + 43 base64url characters (32 random bytes, 256 bits). The prefix makes a
leaked key recognisable (secret scanners, logs); the first :data:`DISPLAY_CHARS` characters are
kept in clear as the key's ``prefix`` so an operator can tell keys apart. Only the SHA-256
digest of the whole secret is stored. A slow password KDF (bcrypt, scrypt, Argon2) exists to
make guessing *low-entropy* human passwords expensive; a uniformly random 256-bit secret cannot
be guessed from its digest whatever the hash costs (2^255 tries on average), so a fast hash
loses nothing and keeps the per-request check cheap. No server-side pepper either: it would
have to live next to the digests (the database or the config) to be useful to every replica.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from allotment.domain.errors import InvalidInput

SECRET_PREFIX = "alm_"
SECRET_BYTES = 32
"""256 bits of randomness per key."""
SECRET_CHARS = len(SECRET_PREFIX) + 43
DISPLAY_CHARS = len(SECRET_PREFIX) + 8
"""How much of a secret is kept in clear (``alm_`` and 8 characters: 48 of its 256 bits)."""
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SECRET_PATTERN = re.compile(r"^alm_[A-Za-z0-9_-]{43}$")


class Scope(enum.StrEnum):
    ADMIN = "admin"
    """Everything."""
    RUNTIME = "runtime"
    """An application's hot path: ingest, values, customer entitlements, authorize, reservations."""
    READ = "read"
    """GET only (not the keys or the audit trail)."""
    INGEST = "ingest"
    """Events only."""


SCOPES: tuple[str, ...] = tuple(s.value for s in Scope)


def parse_scope(value: object, field: str = "scope") -> Scope:
    if not isinstance(value, str) or value not in SCOPES:
        raise InvalidInput(
            f"{field}: must be one of {', '.join(SCOPES)}, got {value!r}", field=field
        )
    return Scope(value)


def check_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or NAME_PATTERN.match(value) is None:
        raise InvalidInput(
            f"{field}: must match {NAME_PATTERN.pattern} (lower-case letters, digits, '_', '.', "
            f"'-'; 1 to 64 characters), got {value!r}",
            field=field,
        )
    return value


@dataclass(frozen=True)
class Requirement:
    """What a route needs: the scopes (besides ``admin``, which opens everything) that may call
    it; ``public`` routes need no key, ``portal`` routes check a portal token themselves,
    ``console`` routes (the operator console's HTML pages and forms) check an admin key, a
    console session cookie and a CSRF token themselves."""

    name: str
    scopes: frozenset[Scope]
    public: bool = False
    portal: bool = False
    console: bool = False

    def allows(self, scope: Scope) -> bool:
        return scope is Scope.ADMIN or scope in self.scopes

    def needed(self) -> list[str]:
        """The scopes that open this route, ``admin`` first (for problem details)."""
        return [Scope.ADMIN.value, *sorted(s.value for s in self.scopes)]


PUBLIC = Requirement("public", frozenset(), public=True)
PORTAL = Requirement("portal", frozenset(), portal=True)
CONSOLE = Requirement("console", frozenset(), console=True)
ADMIN = Requirement("admin", frozenset())
READ = Requirement("read", frozenset({Scope.READ}))
INGEST = Requirement("ingest", frozenset({Scope.INGEST, Scope.RUNTIME}))
RUNTIME = Requirement("runtime", frozenset({Scope.RUNTIME}))
RUNTIME_READ = Requirement("runtime-read", frozenset({Scope.RUNTIME, Scope.READ}))
"""A hot-path read (an entitlement value): the runtime scope and every read key."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: Scope
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def format_secret(random_bytes: bytes) -> str:
    if len(random_bytes) != SECRET_BYTES:
        raise ValueError(f"an API key needs {SECRET_BYTES} random bytes")
    return SECRET_PREFIX + base64.urlsafe_b64encode(random_bytes).rstrip(b"=").decode("ascii")


def looks_like_secret(value: str) -> bool:
    """The shape of a secret we issued (checked before hashing, so junk costs nothing)."""
    return len(value) == SECRET_CHARS and _SECRET_PATTERN.match(value) is not None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_CHARS]


def digest_matches(stored_hex: str, presented_secret: str) -> bool:
    """Constant-time comparison of the stored digest with the presented secret's."""
    return hmac.compare_digest(stored_hex.encode("ascii"), hash_secret(presented_secret).encode())


def bearer_or_header(authorization: str | None, x_api_key: str | None) -> str | None:
    """The presented key: ``X-API-KEY`` or ``Authorization: Bearer``; None when neither."""
    if x_api_key is not None and x_api_key.strip():
        return x_api_key.strip()
    if authorization is None:
        return None
    if authorization.startswith("Bearer ") and " " not in authorization[7:]:
        return authorization[7:] or None  # the common form, without the general parse
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def scopes_text(scopes: Iterable[str]) -> str:
    names = list(scopes)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class AuthMode(enum.StrEnum):
    AUTO = "auto"
    """On as soon as one API key exists (revoked keys count); off while there is none."""
    REQUIRED = "required"
    """On, even before the first key exists (every request but the public ones is refused)."""
    OFF = "off"
    """Off whatever keys exist (``--insecure-no-auth``: behind a gateway that authenticates)."""


def parse_auth_mode(value: object, field: str = "ALLOTMENT_AUTH") -> AuthMode:
    modes = [m.value for m in AuthMode]
    if not isinstance(value, str) or value.lower() not in modes:
        raise InvalidInput(
            f"{field}: must be one of {', '.join(modes)}, got {value!r}", field=field
        )
    return AuthMode(value.lower())
