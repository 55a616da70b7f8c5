"""Customers (OpenMeter's customer, ``shared/design/customers-contract.md`` §1.1). Pure rules.

A customer has an id (ULID), an optional ``key`` and the event subjects that are its own
(``usageAttribution.subjectKeys``). An event counts for the customer when its subject is the
customer's key or one of its subject keys; when one string is both some customer's key and
another customer's subject key, the key's owner wins (:func:`attributed_subjects`).

Input rules (each broken rule is an :class:`InvalidInput` naming the wire field):

* ``name`` required, 1..256 characters;
* ``key`` optional, 1..256 characters, free-form (not the feature-key slug pattern);
* ``usageAttribution`` optional; when present ``subjectKeys`` is required inside (may be
  empty), each a non-empty string of at most 256 characters, at most
  :data:`~allotment.domain.limits.CUSTOMER_SUBJECT_KEYS_MAX` of them; repeats are dropped;
* either a key or at least one subject key;
* ``currency`` a fiat ISO 4217 code; ``billingAddress.country`` an ISO 3166 alpha-2 code
  (upper case); ``metadata`` a string → string map;
* unknown top-level fields are ignored (as OpenMeter's decoder does).

Conflicts with other customers (:func:`key_conflict`, :func:`subjects_conflict`) are 409s with
OpenMeter's wording.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from allotment.domain import limits
from allotment.domain.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
)

TEXT_MAX = 256
EMAIL_MAX = 320
DESCRIPTION_MAX = 1024
ADDRESS_FIELD_MAX = 256
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

FIAT_CURRENCIES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)
"""Active ISO 4217 fiat codes (precious metals, funds and test codes such as XAU, XDR, XTS
and XXX are not fiat)."""

ADDRESS_FIELDS = ("country", "postalCode", "state", "city", "line1", "line2", "phoneNumber")


@dataclass(frozen=True, slots=True)
class CustomerInput:
    """A validated ``CustomerCreate`` / ``CustomerReplaceUpdate`` body."""

    name: str
    key: str | None = None
    subject_keys: tuple[str, ...] = ()
    primary_email: str | None = None
    currency: str | None = None
    billing_address: Mapping[str, str] | None = None
    description: str | None = None
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    key: str | None
    subject_keys: tuple[str, ...]
    """In the order they were given (the first time)."""
    primary_email: str | None
    currency: str | None
    billing_address: Mapping[str, str] | None
    description: str | None
    metadata: Mapping[str, str] | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def candidate_subjects(self) -> tuple[str, ...]:
        """Key first, then the subject keys (no repeats): whose events may be its own."""
        out = [self.key] if self.key is not None else []
        out.extend(s for s in self.subject_keys if s != self.key)
        return tuple(out)


def _text(payload: Mapping[str, Any], name: str, maximum: int, *, where: str = "") -> str | None:
    wire = f"{where}{name}"
    if name not in payload or payload[name] is None:
        return None
    value = payload[name]
    if not isinstance(value, str):
        raise InvalidInput(f"{wire}: must be a string", field=wire)
    if value == "":
        raise InvalidInput(f"{wire}: must not be empty", field=wire)
    if len(value) > maximum:
        raise InvalidInput(
            f"{wire}: must be at most {maximum} characters, got {len(value)}", field=wire
        )
    return value


def _subject_keys(payload: Mapping[str, Any]) -> tuple[str, ...]:
    ua = payload.get("usageAttribution")
    if ua is None:
        return ()
    if not isinstance(ua, dict):
        raise InvalidInput("usageAttribution: must be an object", field="usageAttribution")
    keys = ua.get("subjectKeys")
    wire = "usageAttribution.subjectKeys"
    if not isinstance(keys, list):
        raise InvalidInput(f"{wire}: required, an array of strings", field=wire)
    if len(keys) > limits.CUSTOMER_SUBJECT_KEYS_MAX:
        raise LimitExceeded(
            f"{wire}: {len(keys)} subject keys exceed the limit of "
            f"{limits.CUSTOMER_SUBJECT_KEYS_MAX}",
            field=wire,
        )
    out: list[str] = []
    for index, key in enumerate(keys):
        name = f"{wire}[{index}]"
        if not isinstance(key, str) or key == "":
            raise InvalidInput(f"{name}: must be a non-empty string", field=name)
        if len(key) > TEXT_MAX:
            raise InvalidInput(f"{name}: must be at most {TEXT_MAX} characters", field=name)
        if key not in out:
            out.append(key)
    return tuple(out)


def _address(payload: Mapping[str, Any]) -> dict[str, str] | None:
    raw = payload.get("billingAddress")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInput("billingAddress: must be an object", field="billingAddress")
    out: dict[str, str] = {}
    for name in ADDRESS_FIELDS:
        value = _text(raw, name, ADDRESS_FIELD_MAX, where="billingAddress.")
        if value is not None:
            out[name] = value
    country = out.get("country")
    if country is not None and not _COUNTRY.match(country):
        raise InvalidInput(
            f"billingAddress.country: {country!r} is not an ISO 3166-1 alpha-2 code "
            "(two upper-case letters)",
            field="billingAddress.country",
        )
    return out or None


def _metadata(payload: Mapping[str, Any]) -> dict[str, str] | None:
    raw = payload.get("metadata")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidInput("metadata: must be an object of string values", field="metadata")
    return dict(raw)


def parse_customer_input(payload: Any) -> CustomerInput:
    """The body of a create or full replace, validated; raises on the first broken rule."""
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    name = _text(payload, "name", TEXT_MAX)
    if name is None:
        raise InvalidInput("name: required, a non-empty string", field="name")
    key = _text(payload, "key", TEXT_MAX)
    subject_keys = _subject_keys(payload)
    if key is None and not subject_keys:
        raise InvalidInput(
            "either key or usageAttribution.subjectKeys must be provided", field="key"
        )
    email = _text(payload, "primaryEmail", EMAIL_MAX)
    if email is not None and not _EMAIL.match(email):
        raise InvalidInput(f"primaryEmail: {email!r} is not an email address", field="primaryEmail")
    currency = _text(payload, "currency", 3)
    if currency is not None and (not _CURRENCY.match(currency) or currency not in FIAT_CURRENCIES):
        raise InvalidInput(
            f"currency: {currency!r} is not a fiat ISO 4217 currency code", field="currency"
        )
    return CustomerInput(
        name=name,
        key=key,
        subject_keys=subject_keys,
        primary_email=email,
        currency=currency,
        billing_address=_address(payload),
        description=_text(payload, "description", DESCRIPTION_MAX),
        metadata=_metadata(payload),
    )


# ---------------------------------------------------------------- errors


def customer_deleted(customer: Customer) -> PreconditionFailed:
    """412: a deleted customer is readable by its id, but nothing may change it or use it."""
    return PreconditionFailed(
        f"customer is deleted [customer.id={customer.id}]",
        field="customerIdOrKey",
        extensions={"customerId": customer.id},
    )


def customer_not_found(id_or_key: str) -> NotFound:
    return NotFound(f"customer {id_or_key!r} not found", field="customerIdOrKey")


# ---------------------------------------------------------------- conflicts


def key_conflict(
    key: str, self_id: str | None, by_key: Customer | None, by_id: Customer | None,
    subject_owner: Customer | None,
) -> Conflict | None:  # fmt: skip
    """Why ``key`` may not be this customer's (``self_id``; None on create): another live
    customer has it as key, as id, or as a subject key."""
    if by_key is not None and by_key.id != self_id:
        return Conflict(
            f'key "{key}" is already used by an another customer',
            field="key", extensions={"conflictingEntityId": by_key.id},
        )  # fmt: skip
    if by_id is not None and by_id.id != self_id:
        return Conflict(
            f'key "{key}" overlaps with id of another customer',
            field="key", extensions={"conflictingEntityId": by_id.id},
        )  # fmt: skip
    if subject_owner is not None and subject_owner.id != self_id:
        return Conflict(
            f'key "{key}" overlaps with subject of another customer',
            field="key", extensions={"conflictingEntityId": subject_owner.id},
        )  # fmt: skip
    return None


def subjects_conflict(
    subject_keys: Sequence[str], self_id: str | None, owners: Mapping[str, str]
) -> Conflict | None:
    """``owners``: subject key → id of the live customer that has it. A subject key belongs to
    at most one customer."""
    taken = [s for s in subject_keys if s in owners and owners[s] != self_id]
    if not taken:
        return None
    ids = sorted({owners[s] for s in taken})
    return Conflict(
        f"one or multiple subject keys of [{', '.join(taken)}] are already associated with "
        "an different customer",
        field="usageAttribution.subjectKeys",
        extensions={"conflictingEntityId": ids[0]},
    )


def attributed_subjects(customer: Customer, keys_of_others: Iterable[str]) -> tuple[str, ...]:
    """The event subjects whose usage is the customer's: its key and its subject keys, less
    any subject key that is another live customer's key (the key's owner wins)."""
    others = set(keys_of_others)
    return tuple(s for s in customer.candidate_subjects() if s == customer.key or s not in others)
