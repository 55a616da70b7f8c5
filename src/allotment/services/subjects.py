"""Subjects: batch upsert (create or partial update), list, get by id or key, soft delete.

Upsert rules (docs/api/subjects.md):

* the whole array is validated before anything is written; a 400 names the element and
  field (``[2].key``);
* an unknown key creates a subject (new ULID); a known live key is updated partially: a field
  absent from the element is left as it is, a field present with ``null`` is cleared;
* elements are applied in array order, so when a key repeats, the later element wins for
  every field it carries (exactly as if the elements had been sent one request at a time);
  the response holds one subject per element, in order;
* concurrent first upserts of one key (several processes on PostgreSQL) race on the unique
  index ``subjects_key_live``; the loser's transaction is retried, and then finds the row and
  updates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from allotment.domain import limits
from allotment.domain.errors import InvalidInput, NotFound, PayloadTooLarge
from allotment.domain.ids import is_ulid, new_ulid
from allotment.domain.timeutil import parse_rfc3339, to_micros
from allotment.storage import subjects_repo
from allotment.storage.database import DuplicateKey, Tx
from allotment.storage.subjects_repo import SubjectRecord

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.storage.database import Database

UPSERT_RETRIES = 5
"""Whole-batch retries after losing a create race on the unique key index."""

STRIPE_CUSTOMER_PREFIX = "cus_"

# wire name -> column
_WIRE_FIELDS = {
    "displayName": "display_name",
    "metadata": "metadata",
    "stripeCustomerId": "stripe_customer_id",
    "currentPeriodStart": "current_period_start",
    "currentPeriodEnd": "current_period_end",
}


@dataclass(frozen=True)
class SubjectUpsert:
    key: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Present fields only, by column name, in domain form (None = clear)."""


def _parse_field(where: str, wire: str, value: Any) -> Any:
    name = f"{where}.{wire}"
    if value is None:
        return None
    if wire == "metadata":
        if not isinstance(value, dict):
            raise InvalidInput(f"{name}: must be an object or null", field=name)
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: must be a string or null", field=name)
    if wire == "stripeCustomerId" and not value.startswith(STRIPE_CUSTOMER_PREFIX):
        raise InvalidInput(
            f"{name}: {value!r} is not a Stripe customer id (must start with "
            f"{STRIPE_CUSTOMER_PREFIX!r})",
            field=name,
        )
    if wire in ("currentPeriodStart", "currentPeriodEnd"):
        return parse_rfc3339(value, name)
    return value


def parse_upserts(payload: Any) -> list[SubjectUpsert]:
    """The request body (already JSON-decoded) as validated upserts; raises on the first flaw."""
    if not isinstance(payload, list):
        raise InvalidInput("request body must be a JSON array of subjects", field="body")
    if len(payload) > limits.SUBJECTS_PER_UPSERT_MAX:
        raise PayloadTooLarge(
            f"request body: {len(payload)} subjects in one upsert exceeds the limit of "
            f"{limits.SUBJECTS_PER_UPSERT_MAX}",
            field="body",
        )
    out: list[SubjectUpsert] = []
    for index, item in enumerate(payload):
        where = f"[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: must be a JSON object", field=where)
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{where}.key: required, a non-empty string", field=f"{where}.key")
        fields = {
            column: _parse_field(where, wire, item[wire])
            for wire, column in _WIRE_FIELDS.items()
            if wire in item
        }
        out.append(SubjectUpsert(key=key, fields=fields))
    return out


class SubjectService:
    """Collaborators: the database and clock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ------------------------------------------------------------------ writes

    def upsert(self, payload: Any) -> list[SubjectRecord]:
        items = parse_upserts(payload)
        if not items:
            return []
        for attempt in range(UPSERT_RETRIES + 1):
            try:
                with self._db.write() as tx:
                    return [self._upsert_one(tx, item) for item in items]
            except DuplicateKey:
                if attempt == UPSERT_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _upsert_one(self, tx: Tx, item: SubjectUpsert) -> SubjectRecord:
        now = self._clock.now()
        existing = subjects_repo.get_live_by_key(tx, item.key)
        if existing is not None:
            updated = subjects_repo.update_fields(tx, existing.id, item.fields, now)
            if updated is not None:
                return updated
        record = SubjectRecord(
            id=new_ulid(to_micros(now) // 1000),
            key=item.key,
            display_name=item.fields.get("display_name"),
            metadata=item.fields.get("metadata"),
            stripe_customer_id=item.fields.get("stripe_customer_id"),
            current_period_start=item.fields.get("current_period_start"),
            current_period_end=item.fields.get("current_period_end"),
            created_at=now,
            updated_at=now,
            deleted_at=None,
        )
        subjects_repo.insert(tx, record)
        return record

    def delete(self, id_or_key: str) -> None:
        now = self._clock.now()
        with self._db.write() as tx:
            subject = self._resolve(tx, id_or_key, live_only=True)
            if not subjects_repo.soft_delete(tx, subject.id, now):
                raise NotFound(f"subject {id_or_key!r} not found", field="subjectIdOrKey")

    # ------------------------------------------------------------------ reads

    def list_all(self) -> list[SubjectRecord]:
        with self._db.read() as tx:
            return subjects_repo.list_live(tx)

    def get(self, id_or_key: str) -> SubjectRecord:
        with self._db.read() as tx:
            return self._resolve(tx, id_or_key, live_only=False)

    def _resolve(self, tx: Tx, id_or_key: str, *, live_only: bool) -> SubjectRecord:
        """By id first (a deleted subject stays readable by id), then by live key."""
        if is_ulid(id_or_key):
            by_id = subjects_repo.get_by_id(tx, id_or_key.upper())
            if by_id is not None and (by_id.deleted_at is None or not live_only):
                return by_id
        by_key = subjects_repo.get_live_by_key(tx, id_or_key)
        if by_key is None:
            raise NotFound(f"subject {id_or_key!r} not found", field="subjectIdOrKey")
        return by_key
