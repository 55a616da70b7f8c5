"""Notification rules, pure: wire input of channels and rules, threshold crossing, retry
schedule and Standard Webhooks signatures. No IO, no clock, no randomness (callers pass it).

Threshold semantics (docs/notifications.md): for an entitlement's value in its current usage
period, with ``total = balance + usage - overage`` (the grants available in the period):

* ``usage_value`` (deprecated ``NUMBER``): crossed when ``usage >= value``;
* ``usage_percentage`` (deprecated ``PERCENT``): crossed when ``usage * 100 >= value * total``
  (with no grants, any usage is past every percentage);
* ``balance_value``: crossed when ``balance <= value``.

A rule fires once per usage period per threshold: the caller remembers which threshold keys
were already marked in the period (``notification_marks``) and fires :func:`newly_crossed`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from allotment.domain import limits
from allotment.domain.decimals import parse_amount
from allotment.domain.errors import InvalidInput
from allotment.domain.features import validate_string_map
from allotment.domain.ids import is_ulid

SECRET_PATTERN = re.compile(r"^(whsec_)?[a-zA-Z0-9+/=]{32,100}$")
FEATURE_REF_PATTERN = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
HEADER_NAME_PATTERN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
     "host", "transfer-encoding", "connection"}
)  # fmt: skip

ZERO = Decimal(0)
HUNDRED = Decimal(100)


class RuleType(StrEnum):
    BALANCE_THRESHOLD = "entitlements.balance.threshold"
    RESET = "entitlements.reset"


class ThresholdType(StrEnum):
    USAGE_VALUE = "usage_value"
    USAGE_PERCENTAGE = "usage_percentage"
    BALANCE_VALUE = "balance_value"
    NUMBER = "NUMBER"
    PERCENT = "PERCENT"

    @property
    def canonical(self) -> ThresholdType:
        """The non-deprecated type with the same meaning."""
        if self is ThresholdType.NUMBER:
            return ThresholdType.USAGE_VALUE
        if self is ThresholdType.PERCENT:
            return ThresholdType.USAGE_PERCENTAGE
        return self


class DeliveryState(StrEnum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    RESENDING = "RESENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Threshold:
    value: Decimal
    type: ThresholdType
    key: str = field(init=False, compare=False, repr=False)
    """Identifies the threshold within a rule, whatever spelling of the type was used."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.type.canonical.value}:{self.value.normalize():f}")


@dataclass(frozen=True, slots=True)
class ValueSnapshot:
    """What threshold evaluation reads from an entitlement value."""

    usage: Decimal
    balance: Decimal
    overage: Decimal

    @property
    def total(self) -> Decimal:
        return self.balance + self.usage - self.overage


def crossed(t: Threshold, v: ValueSnapshot) -> bool:
    kind = t.type.canonical
    if kind is ThresholdType.USAGE_VALUE:
        return v.usage >= t.value
    if kind is ThresholdType.BALANCE_VALUE:
        return v.balance <= t.value
    total = v.total
    if total <= ZERO:
        return v.usage > ZERO or t.value <= ZERO
    return v.usage * HUNDRED >= t.value * total


def crossed_keys(thresholds: Iterable[Threshold], v: ValueSnapshot) -> set[str]:
    """Keys of the thresholds ``v`` is past (each distinct key evaluated once)."""
    out: set[str] = set()
    seen: set[str] = set()
    for t in thresholds:
        if t.key not in seen:
            seen.add(t.key)
            if crossed(t, v):
                out.add(t.key)
    return out


def newly_crossed(
    thresholds: Sequence[Threshold], v: ValueSnapshot, marked: Iterable[str]
) -> list[Threshold]:
    """The thresholds crossed by ``v`` that were not yet marked in this period, in rule order."""
    seen = set(marked)
    return [t for t in thresholds if t.key not in seen and crossed(t, v)]


# ---------------------------------------------------------------- wire input


@dataclass(frozen=True, slots=True)
class ChannelIn:
    name: str
    disabled: bool
    url: str
    custom_headers: Mapping[str, str]
    signing_secret: str | None
    metadata: Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class RuleIn:
    type: RuleType
    name: str
    disabled: bool
    channels: tuple[str, ...]
    features: tuple[str, ...] | None
    """Feature ids or keys as sent (resolved to ids by the service)."""
    thresholds: tuple[Threshold, ...]
    metadata: Mapping[str, str] | None


def _obj(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    return payload


def _name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= limits.NOTIFICATION_NAME_MAX:
        raise InvalidInput(
            f"name: required, a string of 1 to {limits.NOTIFICATION_NAME_MAX} characters",
            field="name",
        )
    return name


def _disabled(body: Mapping[str, Any]) -> bool:
    value = body.get("disabled", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput("disabled: must be a boolean", field="disabled")
    return value


def _metadata(body: Mapping[str, Any]) -> Mapping[str, str] | None:
    value = body.get("metadata")
    if value is None:
        return None
    return validate_string_map(value, "metadata") or None


def validate_url(value: Any) -> str:
    """An absolute ``http`` or ``https`` URL with a host (no credentials in it)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("url: required, an http(s) URL", field="url")
    if len(value) > limits.WEBHOOK_URL_LENGTH_MAX:
        raise InvalidInput(
            f"url: must be at most {limits.WEBHOOK_URL_LENGTH_MAX} characters", field="url"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url: {value!r} is not a valid URL ({exc})", field="url") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"url: scheme {parts.scheme or '(none)'!r} is not allowed; only http and https",
            field="url",
        )
    if not parts.hostname:
        raise InvalidInput("url: must name a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url: must not carry credentials; use customHeaders", field="url")
    if port == 0:
        raise InvalidInput("url: port 0 is not allowed", field="url")
    return value


def refused_address(ip: str) -> str | None:
    """Why an outbound webhook must not connect to this address (None: public, allowed)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for label, hit in (
        ("loopback", addr.is_loopback),
        ("private", addr.is_private),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("unspecified", addr.is_unspecified),
        ("reserved", addr.is_reserved),
    ):
        if hit:
            return label
    return None


def _headers(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("customHeaders: must be an object of strings", field="customHeaders")
    if len(value) > limits.WEBHOOK_CUSTOM_HEADERS_MAX:
        raise InvalidInput(
            f"customHeaders: at most {limits.WEBHOOK_CUSTOM_HEADERS_MAX} headers",
            field="customHeaders",
        )
    out: dict[str, str] = {}
    for k, v in value.items():
        if not HEADER_NAME_PATTERN.match(k):
            raise InvalidInput(f"customHeaders: {k!r} is not a valid header name",
                               field="customHeaders")  # fmt: skip
        if k.lower() in RESERVED_HEADERS:
            raise InvalidInput(f"customHeaders: {k!r} is set by the webhook sender",
                               field="customHeaders")  # fmt: skip
        if (
            not isinstance(v, str)
            or len(v) > limits.WEBHOOK_HEADER_VALUE_LENGTH_MAX
            or any(c in v for c in "\r\n\x00")
        ):
            raise InvalidInput(
                f"customHeaders.{k}: must be a string of at most "
                f"{limits.WEBHOOK_HEADER_VALUE_LENGTH_MAX} characters without line breaks",
                field="customHeaders",
            )
        out[k] = v
    return out


def parse_channel(payload: Any) -> ChannelIn:
    body = _obj(payload)
    kind = body.get("type")
    if kind != "WEBHOOK":
        raise InvalidInput(f"type: {kind!r} is not a channel type; only WEBHOOK", field="type")
    secret = body.get("signingSecret")
    if secret is not None and (not isinstance(secret, str) or not SECRET_PATTERN.match(secret)):
        raise InvalidInput(
            "signingSecret: must match ^(whsec_)?[a-zA-Z0-9+/=]{32,100}$ (base64, optionally "
            "prefixed with whsec_)",
            field="signingSecret",
        )
    if secret is not None:
        try:
            decode_secret(secret)
        except ValueError as exc:
            raise InvalidInput("signingSecret: is not valid base64",
                               field="signingSecret") from exc  # fmt: skip
    return ChannelIn(
        name=_name(body), disabled=_disabled(body), url=validate_url(body.get("url")),
        custom_headers=_headers(body.get("customHeaders")), signing_secret=secret,
        metadata=_metadata(body),
    )  # fmt: skip


def _ulids(value: Any, field: str, maximum: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{field}: required, a non-empty list of ids", field=field)
    if len(value) > maximum:
        raise InvalidInput(f"{field}: at most {maximum} items", field=field)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not is_ulid(item):
            raise InvalidInput(f"{field}: {item!r} is not a ULID", field=field)
        if item not in out:
            out.append(item)
    return tuple(out)


def _features(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidInput("features: when given, a non-empty list of feature ids or keys",
                           field="features")  # fmt: skip
    if len(value) > limits.NOTIFICATION_RULE_FEATURES_MAX:
        raise InvalidInput(
            f"features: at most {limits.NOTIFICATION_RULE_FEATURES_MAX} items", field="features"
        )
    out: list[str] = []
    for item in value:
        if (
            not isinstance(item, str)
            or not 1 <= len(item) <= 64
            or not (FEATURE_REF_PATTERN.match(item) or is_ulid(item))
        ):
            raise InvalidInput(f"features: {item!r} is not a feature id or key", field="features")
        if item not in out:
            out.append(item)
    return tuple(out)


def _thresholds(value: Any) -> tuple[Threshold, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidInput("thresholds: required, a list of 1 to "
                           f"{limits.NOTIFICATION_THRESHOLDS_MAX} thresholds",
                           field="thresholds")  # fmt: skip
    if len(value) > limits.NOTIFICATION_THRESHOLDS_MAX:
        raise InvalidInput(
            f"thresholds: at most {limits.NOTIFICATION_THRESHOLDS_MAX} thresholds",
            field="thresholds",
        )
    out: list[Threshold] = []
    keys: set[str] = set()
    for i, item in enumerate(value):
        where = f"thresholds[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: must be an object with value and type", field=where)
        try:
            kind = ThresholdType(str(item.get("type")))
        except ValueError as exc:
            allowed = ", ".join(t.value for t in ThresholdType)
            raise InvalidInput(f"{where}.type: {item.get('type')!r} is not one of {allowed}",
                               field=f"{where}.type") from exc  # fmt: skip
        amount = parse_amount(item.get("value"), f"{where}.value")
        if kind.canonical is ThresholdType.BALANCE_VALUE:
            if amount < ZERO:
                raise InvalidInput(f"{where}.value: a balance threshold must be >= 0",
                                   field=f"{where}.value")  # fmt: skip
        elif amount <= ZERO:
            raise InvalidInput(f"{where}.value: a usage threshold must be > 0",
                               field=f"{where}.value")  # fmt: skip
        t = Threshold(amount, kind)
        if t.key in keys:
            raise InvalidInput(f"{where}: duplicate threshold ({t.key})", field=where)
        keys.add(t.key)
        out.append(t)
    return tuple(out)


def parse_rule(payload: Any) -> RuleIn:
    body = _obj(payload)
    try:
        kind = RuleType(str(body.get("type")))
    except ValueError as exc:
        allowed = ", ".join(t.value for t in RuleType)
        raise InvalidInput(f"type: {body.get('type')!r} is not one of {allowed}",
                           field="type") from exc  # fmt: skip
    thresholds = _thresholds(body.get("thresholds")) if kind is RuleType.BALANCE_THRESHOLD else ()
    return RuleIn(
        type=kind, name=_name(body), disabled=_disabled(body),
        channels=_ulids(body.get("channels"), "channels", limits.NOTIFICATION_RULE_CHANNELS_MAX),
        features=_features(body.get("features")), thresholds=thresholds,
        metadata=_metadata(body),
    )  # fmt: skip


# ---------------------------------------------------------------- signing and retries


def decode_secret(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    if not key:
        raise ValueError("empty secret")
    return key


def encode_secret(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>`` of
    ``{id}.{timestamp}.{body}`` keyed by the decoded secret."""
    mac = hmac.new(decode_secret(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    5.0, 30.0, 120.0, 600.0, 1800.0, *([3600.0] * 24),
)  # fmt: skip
"""Seconds before each retry: 5 s, 30 s, 2 min, 10 min, 30 min, then hourly: 30 attempts
spread over about 24.8 hours."""


def parse_schedule(text: str, field: str) -> tuple[float, ...]:
    """``"5s,30s,2m,1h"`` (s/m/h suffix, default seconds) → delays in seconds."""
    out: list[float] = []
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        scale = units.get(part[-1], None)
        number = part[:-1] if scale is not None else part
        try:
            delay = float(number) * (scale or 1.0)
        except ValueError as exc:
            raise InvalidInput(f"{field}: {part!r} is not a delay like 5s, 2m or 1h",
                               field=field) from exc  # fmt: skip
        if not 0 < delay <= 86_400:
            raise InvalidInput(f"{field}: {part!r} must be > 0 and at most 24h", field=field)
        out.append(delay)
    return tuple(out)


def retry_delay(schedule: Sequence[float], attempts_made: int, jitter: float) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failed ones (None: give up).
    ``jitter`` in [-1, 1] spreads the delay by up to ±10 %."""
    index = attempts_made - 1
    if index < 0 or index >= len(schedule):
        return None
    return schedule[index] * (1.0 + 0.1 * max(-1.0, min(1.0, jitter)))
