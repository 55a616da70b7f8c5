"""Portal tokens: issue, list, invalidate, and authenticate a portal meter query.

A token is an HS256 JWT (``domain.portal_tokens``) naming its database row (claim ``id``).
Every portal request verifies the signature and expiry, then reads that row by primary key,
so an invalidation is effective at once on every process sharing the database.

The signing secret is ``settings.portal_token_secret`` when configured; otherwise a random
secret generated once and kept in ``server_settings`` (``INSERT … ON CONFLICT DO NOTHING``, then
read back), so every replica on one database signs and verifies with the same secret.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from allotment.domain.errors import InvalidInput, NotFound, Unauthorized
from allotment.domain.ids import new_ulid
from allotment.domain.portal_tokens import PortalClaims, encode_token, meter_allowed, verify_token
from allotment.domain.timeutil import format_rfc3339, parse_rfc3339, to_micros
from allotment.storage import portal_repo
from allotment.storage.portal_repo import PortalTokenRecord

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.services.meters import MeterService
    from allotment.storage.database import Database

LIST_LIMIT_DEFAULT = 25
LIST_LIMIT_MAX = 100


@dataclass(frozen=True)
class IssuedToken:
    record: PortalTokenRecord
    token: str


def _ceil_seconds(at: datetime) -> int:
    us = to_micros(at)
    return -(-us // 1_000_000)


class PortalService:
    """Collaborators: the database and clock, ``meters`` (a token names existing meters), the
    configured signing secret (None: one is generated and stored once) and the default token
    lifetime in seconds."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        meters: MeterService,
        secret: str | None,
        expiration_seconds: int,
    ) -> None:
        self._db = db
        self._clock = clock
        self._meters = meters
        self._configured_secret = secret
        self._expiration_seconds = expiration_seconds
        self._secret: bytes | None = None
        self._secret_lock = threading.Lock()

    # ------------------------------------------------------------------ secret

    def _signing_secret(self) -> bytes:
        configured = self._configured_secret
        if configured:
            return configured.encode("utf-8")
        if self._secret is None:
            with self._secret_lock:
                if self._secret is None:
                    with self._db.read() as tx:
                        stored = portal_repo.read_secret(tx)
                    if stored is None:
                        with self._db.write() as tx:
                            stored = portal_repo.store_secret_once(tx, secrets.token_urlsafe(48))
                    self._secret = stored.encode("utf-8")
        return self._secret

    # ------------------------------------------------------------------ create

    def _resolve_meter(self, slug: str, index: int) -> str:
        """The slug of an existing meter (an id is accepted and stored as its slug)."""
        try:
            return self._meters.get(slug).slug
        except NotFound as exc:
            name = f"allowedMeterSlugs[{index}]"
            raise NotFound(f"{name}: meter {slug!r} not found", field=name) from exc

    def create(self, payload: Any) -> IssuedToken:
        """Validate the whole request (400/404) before anything is written."""
        if not isinstance(payload, dict):
            raise InvalidInput("request body must be a JSON object", field="body")
        subject = payload.get("subject")
        if not isinstance(subject, str) or not subject:
            raise InvalidInput("subject: required, a non-empty string", field="subject")
        slugs = self._parse_slugs(payload.get("allowedMeterSlugs"))
        now = self._clock.now()
        raw_expiry = payload.get("expiresAt")
        if raw_expiry is None:
            expires_at = now + timedelta(seconds=self._expiration_seconds)
        else:
            if not isinstance(raw_expiry, str):
                raise InvalidInput("expiresAt: must be an RFC 3339 date-time", field="expiresAt")
            expires_at = parse_rfc3339(raw_expiry, "expiresAt")
            if expires_at <= now:
                raise InvalidInput(
                    f"expiresAt: {format_rfc3339(expires_at)} is not in the future "
                    f"(now is {format_rfc3339(now)})",
                    field="expiresAt",
                )
        if slugs is not None:
            resolved = [self._resolve_meter(slug, i) for i, slug in enumerate(slugs)]
            slugs = tuple(dict.fromkeys(resolved))
        secret = self._signing_secret()
        record = PortalTokenRecord(
            id=new_ulid(to_micros(now) // 1000),
            subject=subject,
            allowed_meter_slugs=slugs,
            expires_at=expires_at,
            created_at=now,
            invalidated_at=None,
        )
        token = encode_token(
            PortalClaims(
                subject=subject,
                token_id=record.id,
                issued_at=to_micros(now) // 1_000_000,
                expires_at=_ceil_seconds(expires_at),
                allowed_meter_slugs=slugs,
            ),
            secret,
        )
        with self._db.write() as tx:
            portal_repo.insert(tx, record)
        return IssuedToken(record, token)

    @staticmethod
    def _parse_slugs(value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise InvalidInput(
                "allowedMeterSlugs: must be an array of meter slugs", field="allowedMeterSlugs"
            )
        if not value:
            raise InvalidInput(
                "allowedMeterSlugs: must not be empty (omit it to allow every meter)",
                field="allowedMeterSlugs",
            )
        out: list[str] = []
        for index, slug in enumerate(value):
            if not isinstance(slug, str) or not slug:
                name = f"allowedMeterSlugs[{index}]"
                raise InvalidInput(f"{name}: must be a non-empty string", field=name)
            if slug not in out:
                out.append(slug)
        return tuple(out)

    # ------------------------------------------------------------------ list / invalidate

    def list_tokens(self, limit: int = LIST_LIMIT_DEFAULT) -> list[PortalTokenRecord]:
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidInput(f"limit: must be between 1 and {LIST_LIMIT_MAX}", field="limit")
        with self._db.read() as tx:
            return portal_repo.list_newest(tx, limit)

    def is_expired(self, record: PortalTokenRecord) -> bool:
        """No longer usable: past ``expiresAt`` or invalidated."""
        return record.invalidated_at is not None or record.expires_at <= self._clock.now()

    def invalidate(self, payload: Any) -> int:
        """``{}`` invalidates every token; ``id`` and/or ``subject`` narrow it (both must match)."""
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidInput("request body must be a JSON object", field="body")
        filters: dict[str, str | None] = {}
        for name in ("id", "subject"):
            value = payload.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"{name}: must be a non-empty string", field=name)
            filters[name] = value
        now = self._clock.now()
        with self._db.write() as tx:
            return portal_repo.invalidate(
                tx, now, token_id=filters["id"], subject=filters["subject"]
            )

    # ------------------------------------------------------------------ authenticate

    def verify(self, token: str) -> PortalTokenRecord:
        """The live token row behind a token string: signature and expiry checked, then the
        row read by primary key (unknown, invalidated or expired: 401 saying which)."""
        now = self._clock.now()
        claims = verify_token(token, self._signing_secret(), to_micros(now) // 1_000_000)
        with self._db.read() as tx:
            record = portal_repo.get(tx, claims.token_id)
        if record is None or record.subject != claims.subject:
            raise Unauthorized("portal token: unknown token")
        if record.invalidated_at is not None:
            raise Unauthorized("portal token: invalidated")
        if record.expires_at <= now:
            raise Unauthorized("portal token: expired")
        return record

    def authenticate(self, authorization: str | None, meter_slug: str) -> PortalTokenRecord:
        """The live token row behind an ``Authorization: Bearer`` header, allowed on this meter."""
        record = self.verify(_bearer(authorization))
        if not meter_allowed(record.allowed_meter_slugs, meter_slug):
            raise Unauthorized(f"portal token: not allowed to query meter {meter_slug!r}")
        return record


def _bearer(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise Unauthorized("missing Authorization header (expected: Bearer <portal token>)")
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized("malformed Authorization header (expected: Bearer <portal token>)")
    return value
