"""Entitlements: create/override/delete, lists, value, history and reset.

Reads run in one read transaction and never write (a value or history read is a pure
function of the stored rows and the meter's usage). Every write that depends on the
entitlement's state (reset, delete, override, and the grant writes in ``GrantService``)
re-reads the entitlement under its lock inside the write transaction
(``entitlements_repo.lock``).

Owners (``domain/owners.py``): every method taking an owner accepts either the
``subjectIdOrKey`` of the subject routes — the subject key, used verbatim; it need not be a
known subject; the ULID of a live subject (upserted through ``/api/v1/subjects``) resolves to
that subject's key — or an :class:`Owner`. A customer owner (``Owner.customer(id)``) has the
same entitlements, grants, value, history and reset; its usage is the meter's usage over the
customer's key and subject keys as they are at read time (``CustomerService.subjects_in``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from allotment.domain import entitlement_math as em
from allotment.domain.engine import Aggregation, Phase, UsageFn
from allotment.domain.entitlement_inputs import (
    EntitlementCreate,
    EntitlementType,
    Paging,
    ResetIn,
)
from allotment.domain.errors import Conflict, InvalidInput, NotFound
from allotment.domain.features import Feature
from allotment.domain.grants import DEFAULT_ISSUE_AFTER_RESET_PRIORITY
from allotment.domain.ids import is_ulid, new_ulid
from allotment.domain.owners import Owner
from allotment.domain.periods import (
    Period,
    Recurrence,
    interval_iso,
    parse_interval,
    period_at,
)
from allotment.domain.timeutil import ceil_minute, floor_minute, to_micros
from allotment.domain.usage_series import UsageSeries
from allotment.services.customers import CustomerService, deleted, not_found
from allotment.storage import (
    customers_repo,
    entitlements_repo,
    features_repo,
    grants_repo,
    usage_marks,
)
from allotment.storage.database import DuplicateKey, Tx
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.grants_repo import GrantRecord

if TYPE_CHECKING:
    from allotment.container import Container

ZERO = Decimal(0)

OwnerRef = str | Owner
"""A subject route's ``subjectIdOrKey``, or an owner."""


@dataclass(frozen=True, slots=True)
class EntitlementView:
    """An entitlement plus what its wire form derives at read time."""

    record: EntitlementRecord
    current_usage_period: Period | None
    last_reset: datetime | None


@dataclass(frozen=True, slots=True)
class ValueView:
    """``metered`` is None for static/boolean entitlements and inactive ones."""

    has_access: bool
    metered: em.MeteredValue | None = None
    config: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryView:
    history: em.History
    tz: ZoneInfo


@dataclass(frozen=True, slots=True)
class MeteredContext:
    """Everything the engine needs about one metered entitlement, loaded in one read."""

    record: EntitlementRecord
    spec: em.MeteredSpec
    resets: list[em.ManualReset]
    grants: list[GrantRecord]
    feature: Feature
    subjects: tuple[str, ...]
    """Whose usage counts (a subject's own key; a customer's key and subject keys)."""


def spec_of(
    record: EntitlementRecord, aggregation: Aggregation = Aggregation.SUM
) -> em.MeteredSpec:
    if (
        record.usage_period_interval is None
        or record.usage_period_anchor is None
        or record.measure_usage_from is None
    ):
        raise InvalidInput(f"entitlement {record.id} is not metered")
    return em.MeteredSpec(
        usage_period=Recurrence(
            parse_interval(record.usage_period_interval), record.usage_period_anchor
        ),
        measure_usage_from=record.measure_usage_from,
        is_soft_limit=record.is_soft_limit,
        preserve_overage_at_reset=record.preserve_overage_at_reset,
        issue_after_reset=record.issue_after_reset,
        issue_after_reset_priority=(
            record.issue_after_reset_priority or DEFAULT_ISSUE_AFTER_RESET_PRIORITY
        ),
        aggregation=aggregation,
    )


def _usage_fn(series: UsageSeries, aggregation: Aggregation) -> UsageFn:
    if aggregation is Aggregation.UNIQUE_COUNT:
        return lambda ps, a, b: series.unique(ps, b) - series.unique(ps, a)
    if aggregation is Aggregation.LATEST:
        return lambda ps, a, b: series.latest(a, b)
    return lambda ps, a, b: series.total(a, b)


def _window_fn(series: UsageSeries, aggregation: Aggregation, end: datetime) -> em.WindowUsageFn:
    def window(a: datetime, b: datetime) -> Decimal:
        b = min(b, end)
        if b <= a:
            return ZERO
        if aggregation is Aggregation.UNIQUE_COUNT:
            return series.unique(a, b)
        if aggregation is Aggregation.LATEST:
            return series.latest(a, b)
        return series.total(a, b)

    return window


@contextmanager
def field_named() -> Iterator[None]:
    """Make a domain rejection's detail start with the wire field it names."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field and exc.field not in exc.detail:
            raise InvalidInput(
                f"{exc.field}: {exc.detail}", field=exc.field, extensions=exc.extensions
            ) from exc
        raise


class EntitlementService:
    def __init__(self, container: Container, value_cache: bool | None = None) -> None:
        """``value_cache``: serve value checks through the in-process cache
        (``services/value_cache.py``); None: on unless ``ALLOTMENT_VALUE_CACHE=off``."""
        from allotment.services.value_cache import ValueCache, enabled

        self._c = container
        on = enabled() if value_cache is None else value_cache
        self.cache: ValueCache | None = ValueCache(container, self) if on else None

    @property
    def inline_reads(self) -> bool:
        """Whether a cached value check may run on the event loop: its one read is a local
        SQLite point read of a few microseconds (PostgreSQL needs a round trip)."""
        return self.cache is not None and self._c.db.dialect == "sqlite"

    # ------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return self._c.clock.now().astimezone(UTC)

    def _new_id(self) -> str:
        return new_ulid(self._c.now_us() // 1000)

    def subject_key(self, tx: Tx, subject_id_or_key: str) -> str:
        if is_ulid(subject_id_or_key):
            key = entitlements_repo.subject_key_of_id(tx, subject_id_or_key)
            if key is not None:
                return key
        return subject_id_or_key

    def owner_of(self, tx: Tx, ref: OwnerRef) -> Owner:
        return ref if isinstance(ref, Owner) else Owner.subject(self.subject_key(tx, ref))

    @staticmethod
    def usage_subjects(tx: Tx, record: EntitlementRecord) -> tuple[str, ...]:
        """The event subjects whose usage is the entitlement's, as they are now."""
        if not record.customer_id:
            return (record.subject_key,)
        customer = customers_repo.by_id(tx, record.customer_id)
        return () if customer is None else CustomerService.subjects_in(tx, customer)

    def resolve(
        self, tx: Tx, owner_ref: OwnerRef, id_or_feature_key: str, at: datetime
    ) -> EntitlementRecord:
        """§1.5: a ULID is looked up as an entitlement id (of this owner); otherwise (or
        when not found) the owner's entitlement for that feature key active at ``at``."""
        owner = self.owner_of(tx, owner_ref)
        if is_ulid(id_or_feature_key):
            found = entitlements_repo.by_id(tx, id_or_feature_key)
            if found is not None and found.owner == owner:
                return found
        found = entitlements_repo.active_for_feature_key_at(tx, owner, id_or_feature_key, at)
        if found is None:
            raise NotFound(
                f"entitlement {id_or_feature_key!r} not found for {owner.describe()}"
                if owner.is_customer
                else f"entitlement {id_or_feature_key!r} not found for subject "
                f"{owner.subject_key!r}"
            )
        return found

    def aggregation_of(self, feature: Feature) -> Aggregation:
        if feature.meter_slug is None:
            raise InvalidInput(f"feature {feature.key!r} has no meter")
        meter: Any = self._c.meters.get(feature.meter_slug)
        return Aggregation(str(getattr(meter.aggregation, "value", meter.aggregation)))

    def _feature_of(self, tx: Tx, record: EntitlementRecord) -> Feature:
        feature = features_repo.by_id(tx, record.feature_id)
        if feature is None:  # features are archived, never deleted
            raise NotFound(f"feature {record.feature_id} of entitlement {record.id} not found")
        return feature

    def view(self, tx: Tx, record: EntitlementRecord, now: datetime) -> EntitlementView:
        if record.type == EntitlementType.METERED:
            spec = spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            period = em.timeline(spec, resets).current_usage_period(now)
            return EntitlementView(record, period, em.last_reset(spec, resets))
        if record.usage_period_interval and record.usage_period_anchor:
            rec = Recurrence(parse_interval(record.usage_period_interval),
                             record.usage_period_anchor)  # fmt: skip
            return EntitlementView(record, period_at(rec, now), None)
        return EntitlementView(record, None, None)

    # ------------------------------------------------------------ create / override

    def _feature_for(self, tx: Tx, inp: EntitlementCreate) -> Feature:
        by_id = by_key = None
        if inp.feature_id is not None:
            by_id = features_repo.by_id(tx, inp.feature_id)
            if by_id is None or by_id.archived_at is not None:
                raise NotFound(f"feature {inp.feature_id!r} not found", field="featureId")
        if inp.feature_key is not None:
            by_key = features_repo.live_by_key(tx, inp.feature_key)
            if by_key is None:
                raise NotFound(f"feature {inp.feature_key!r} not found", field="featureKey")
        if by_id is not None and by_key is not None and by_id.id != by_key.id:
            raise InvalidInput(
                "featureId and featureKey name different features", field="featureKey"
            )
        feature = by_id or by_key
        assert feature is not None
        return feature

    def _build(
        self,
        owner: Owner,
        inp: EntitlementCreate,
        feature: Feature,
        now: datetime,
        annotations: Mapping[str, Any] | None = None,
    ) -> tuple[EntitlementRecord, GrantRecord | None]:
        """The new entitlement (and its default grant) — pure, before any write."""
        eid = self._new_id()
        interval = anchor = measure = None
        default: GrantRecord | None = None
        priority = None
        if inp.usage_period is not None:
            interval = interval_iso(inp.usage_period.interval)
            anchor = floor_minute((inp.usage_period.anchor or now).astimezone(UTC))
        if inp.type is EntitlementType.METERED:
            if feature.meter_slug is None:
                raise InvalidInput(
                    f"feature {feature.key!r} has no meter; metered entitlements need one",
                    field="featureKey",
                )
            assert inp.usage_period is not None
            assert anchor is not None
            rec = Recurrence(inp.usage_period.interval, anchor)
            with field_named():
                measure = em.resolve_measure_usage_from(inp.measure_usage_from, rec, now)
            if inp.issue_after_reset is not None:
                priority = inp.issue_after_reset_priority or DEFAULT_ISSUE_AFTER_RESET_PRIORITY
            if inp.issue_after_reset is not None and inp.issue_after_reset > 0:
                amount = inp.issue_after_reset
                default = GrantRecord(
                    id=self._new_id(), entitlement_id=eid, subject_key=owner.subject_key,
                    amount=amount,
                    priority=priority or DEFAULT_ISSUE_AFTER_RESET_PRIORITY,
                    effective_at=measure, expiration_duration=None, expiration_count=None,
                    expires_at=None, max_rollover=amount, min_rollover=amount,
                    recurrence_interval=None, recurrence_anchor=None, metadata=None,
                    annotations={"issueAfterReset": True}, created_at=now, updated_at=now,
                )  # fmt: skip
        record = EntitlementRecord(
            id=eid, subject_key=owner.subject_key, customer_id=owner.customer_id,
            feature_id=feature.id, feature_key=feature.key,
            type=inp.type.value, metadata=inp.metadata, annotations=annotations,
            config=inp.config,
            usage_period_interval=interval, usage_period_anchor=anchor,
            measure_usage_from=measure, is_soft_limit=inp.is_soft_limit,
            issue_after_reset=inp.issue_after_reset, issue_after_reset_priority=priority,
            preserve_overage_at_reset=inp.preserve_overage_at_reset, active_from=now,
            active_to=None, created_at=now, updated_at=now,
        )  # fmt: skip
        return record, default

    def _insert(self, tx: Tx, record: EntitlementRecord, default: GrantRecord | None) -> None:
        entitlements_repo.insert(tx, record)
        if default is not None:
            grants_repo.insert(tx, default)

    def _raced(self, record: EntitlementRecord) -> Conflict:
        """A concurrent create won the unique index: name it, read in a fresh transaction
        (the failed one is unusable on PostgreSQL)."""
        with self._c.db.read() as tx:
            return self._conflict(tx, record)

    @staticmethod
    def _conflict(tx: Tx, record: EntitlementRecord) -> Conflict:
        existing = entitlements_repo.live_for(tx, record.owner, record.feature_key)
        ext = {"conflictingEntityId": existing.id} if existing is not None else None
        owner = record.owner.describe() if record.customer_id else f"subject {record.subject_key!r}"
        return Conflict(
            f"entitlement with id {existing.id if existing else '?'} already exists for "
            f"feature {record.feature_key!r} and {owner}",
            extensions=ext,
        )

    @staticmethod
    def require_live_owner(tx: Tx, owner: Owner) -> None:
        """A customer owner must exist and not be deleted (404 / 412)."""
        if not owner.is_customer:
            return
        customer = customers_repo.by_id(tx, owner.customer_id)
        if customer is None:
            raise not_found(owner.customer_id)
        if customer.is_deleted:
            raise deleted(customer)

    def create(
        self,
        owner_ref: OwnerRef,
        inp: EntitlementCreate,
        annotations: Mapping[str, Any] | None = None,
    ) -> EntitlementView:
        now = self._now()
        with self._c.db.read() as tx:
            owner = self.owner_of(tx, owner_ref)
            feature = self._feature_for(tx, inp)
        record, default = self._build(owner, inp, feature, now, annotations)
        try:
            with self._c.db.write() as tx:
                self.require_live_owner(tx, owner)
                existing = entitlements_repo.live_for(tx, owner, feature.key)
                if existing is not None:
                    raise self._conflict(tx, record)
                self._insert(tx, record, default)
                usage_marks.bump_scope(tx, owner.scope, feature.key)
                return self.view(tx, record, now)
        except DuplicateKey:
            raise self._raced(record) from None

    def override(
        self, owner_ref: OwnerRef, id_or_feature_key: str, inp: EntitlementCreate
    ) -> EntitlementView:
        now = self._now()
        with self._c.db.read() as tx:
            old = self.resolve(tx, owner_ref, id_or_feature_key, now)
            feature = self._feature_for(tx, inp)
        if old.deleted_at is not None:
            raise InvalidInput(f"entitlement {old.id} is already deleted")
        if not old.active_at(now):
            raise NotFound(f"entitlement {old.id} is not active")
        if feature.id != old.feature_id:
            raise InvalidInput(
                f"the override must be for the same feature ({old.feature_key!r})",
                field="featureKey",
            )
        record, default = self._build(old.owner, inp, feature, now)
        try:
            with self._c.db.write() as tx:
                self.require_live_owner(tx, old.owner)
                locked = entitlements_repo.lock(tx, old.id, self._c.db.dialect)
                if locked is None or locked.deleted_at is not None:
                    raise InvalidInput(f"entitlement {old.id} is already deleted")
                now_us = to_micros(now)
                entitlements_repo.soft_delete(tx, old.id, now_us)
                grants_repo.delete_for_entitlement(tx, old.id, now_us)
                self._insert(tx, record, default)
                usage_marks.bump_scope(tx, old.owner.scope, old.feature_key)
                return self.view(tx, record, now)
        except DuplicateKey:
            raise self._raced(record) from None

    def delete(self, owner_ref: OwnerRef, entitlement_id: str) -> None:
        now = self._now()
        with self._c.db.write() as tx:
            found = self.resolve(tx, owner_ref, entitlement_id, now)
            locked = entitlements_repo.lock(tx, found.id, self._c.db.dialect)
            if locked is None or locked.deleted_at is not None:
                raise NotFound(f"entitlement {entitlement_id!r} not found")
            now_us = to_micros(now)
            entitlements_repo.soft_delete(tx, found.id, now_us)
            grants_repo.delete_for_entitlement(tx, found.id, now_us)
            usage_marks.bump_scope(tx, locked.owner.scope, locked.feature_key)

    # ------------------------------------------------------------ reads

    def get(self, owner_ref: OwnerRef, entitlement_id: str) -> EntitlementView:
        now = self._now()
        with self._c.db.read() as tx:
            return self.view(tx, self.resolve(tx, owner_ref, entitlement_id, now), now)

    def get_by_id(self, entitlement_id: str) -> EntitlementView:
        now = self._now()
        with self._c.db.read() as tx:
            found = entitlements_repo.by_id(tx, entitlement_id)
            if found is None:
                raise NotFound(f"entitlement {entitlement_id!r} not found")
            return self.view(tx, found, now)

    def list_for_owner(self, owner_ref: OwnerRef, include_deleted: bool) -> list[EntitlementView]:
        now = self._now()
        with self._c.db.read() as tx:
            owner = self.owner_of(tx, owner_ref)
            rows = entitlements_repo.list_for_owner(tx, owner, now, include_deleted)
            return [self.view(tx, r, now) for r in rows]

    list_for_subject = list_for_owner

    def list_all(
        self,
        features: Sequence[str],
        subjects: Sequence[str],
        types: Sequence[str],
        exclude_inactive: bool,
        paging: Paging,
        customer_ids: Sequence[str] | None = None,
    ) -> tuple[list[EntitlementView], int]:
        """``customer_ids`` None: subject-owned entitlements (``subjects`` filters them);
        else customer-owned ones of these customers (any customer's when empty)."""
        now = self._now()
        with self._c.db.read() as tx:
            feature_ids = features_repo.ids_for(tx, features) if features else None
            keys = sorted({self.subject_key(tx, s) for s in subjects} | set(subjects))
            rows, total = entitlements_repo.list_all(
                tx, feature_ids=feature_ids, subject_keys=keys, types=types,
                exclude_inactive_at=now if exclude_inactive else None,
                order_by=paging.order_by, descending=paging.descending,
                limit=paging.limit, offset=paging.offset, customer_ids=customer_ids,
            )  # fmt: skip
            return [self.view(tx, r, now) for r in rows], total

    # ------------------------------------------------------------ metered math

    def metered_context(self, tx: Tx, record: EntitlementRecord) -> MeteredContext:
        if record.type != EntitlementType.METERED:
            raise InvalidInput(
                f"entitlement {record.id} is {record.type}; this needs a metered entitlement"
            )
        feature = self._feature_of(tx, record)
        return MeteredContext(
            record, spec_of(record), entitlements_repo.resets_of(tx, record.id),
            grants_repo.of_entitlement(tx, record.id), feature, self.usage_subjects(tx, record),
        )  # fmt: skip

    def _series(self, ctx: MeteredContext, period: Period) -> UsageSeries:
        assert ctx.feature.meter_slug is not None
        series: UsageSeries = self._c.meter_queries.usage_series(
            ctx.feature.meter_slug, ctx.subjects, ctx.feature.group_filters,
            period.start, period.end,
        )  # fmt: skip
        return series

    def value(self, owner_ref: OwnerRef, id_or_feature_key: str, at: datetime | None) -> ValueView:
        """The entitlement value at ``at`` (default now): from the value cache when it is on
        and can answer, else the plain computation. Both give identical results."""
        at = (at or self._now()).astimezone(UTC)
        if self.cache is not None:
            answer = self.cache.serve(owner_ref, id_or_feature_key, at, allow_io=True)
            if answer is not None:
                return answer.view
        return self.plain_value(owner_ref, id_or_feature_key, at)

    def cached_value_body(
        self,
        owner_ref: OwnerRef,
        id_or_feature_key: str,
        at: datetime | None,
        render: Callable[[ValueView], bytes],
    ) -> bytes | None:
        """The rendered value when the cache answers after its one version read (no other IO);
        None otherwise (call :meth:`value`). ``render`` is memoised per cached answer."""
        if self.cache is None:
            return None
        answer = self.cache.serve(
            owner_ref, id_or_feature_key, (at or self._now()).astimezone(UTC),
            allow_io=False,
        )  # fmt: skip
        if answer is None:
            return None
        body = answer.body
        if body is None:
            body = answer.body = render(answer.view)
        return body

    def plain_value(
        self, owner_ref: OwnerRef, id_or_feature_key: str, at: datetime | None
    ) -> ValueView:
        """The value computed from the stored rows alone (no cache): the reference."""
        at = (at or self._now()).astimezone(UTC)
        with self._c.db.read() as tx:
            record = self.resolve(tx, owner_ref, id_or_feature_key, at)
            if not record.active_at(at):
                return ValueView(False)
            if record.type == EntitlementType.BOOLEAN:
                return ValueView(True)
            if record.type == EntitlementType.STATIC:
                return ValueView(True, config=record.config)
            ctx = self.metered_context(tx, record)
        aggregation = self.aggregation_of(ctx.feature)
        spec = spec_of(record, aggregation)
        grants = [g.to_domain() for g in ctx.grants]
        plan = em.plan_value(spec, grants, ctx.resets, at)
        if plan.usage_range.start < plan.usage_range.end:
            series = self._series(ctx, plan.usage_range)
            usage_fn = _usage_fn(series, aggregation)
        else:
            usage_fn = lambda ps, a, b: ZERO  # noqa: E731

        def per_phase(phase: Phase) -> Decimal:
            return usage_fn(phase.period_start, phase.from_, phase.to)

        value = em.value_from_usage(spec, grants, plan, per_phase)
        return ValueView(value.has_access, value)

    def history(
        self,
        owner_ref: OwnerRef,
        entitlement_id: str,
        window_size: str,
        from_: datetime | None,
        to: datetime | None,
        tz_name: str | None,
    ) -> HistoryView:
        try:
            size = em.WindowSize(window_size)
        except ValueError as exc:
            raise InvalidInput(
                f"windowSize: {window_size!r} is not one of MINUTE, HOUR, DAY, MONTH",
                field="windowSize",
            ) from exc
        try:
            tz = ZoneInfo(tz_name or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInput(
                f"windowTimeZone: {tz_name!r} is not a known IANA time zone",
                field="windowTimeZone",
            ) from exc
        now = self._now()
        with self._c.db.read() as tx:
            record = self.resolve(tx, owner_ref, entitlement_id, now)
            ctx = self.metered_context(tx, record)
        aggregation = self.aggregation_of(ctx.feature)
        spec = spec_of(record, aggregation)
        start = (from_ or em.last_reset(spec, ctx.resets)).astimezone(UTC)
        end = (to or now).astimezone(UTC)
        if floor_minute(start) < spec.measure_usage_from:
            raise InvalidInput(
                "from: must not be before measureUsageFrom "
                f"({spec.measure_usage_from.isoformat()})",
                field="from",
            )
        if end < start:
            raise InvalidInput("from: must not be after to", field="from")
        end_at = ceil_minute(end)
        series = self._series(ctx, Period(spec.measure_usage_from, end_at))
        with field_named():
            result = em.history(
                spec, [g.to_domain() for g in ctx.grants], ctx.resets, start, end, size, tz,
                _usage_fn(series, aggregation), _window_fn(series, aggregation, end_at),
            )  # fmt: skip
        return HistoryView(result, tz)

    def reset(self, owner_ref: OwnerRef, entitlement_id: str, inp: ResetIn) -> None:
        now = self._now()
        with self._c.db.write() as tx:
            found = self.resolve(tx, owner_ref, entitlement_id, now)
            record = entitlements_repo.lock(tx, found.id, self._c.db.dialect)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"entitlement {entitlement_id!r} not found")
            if record.type != EntitlementType.METERED:
                raise InvalidInput(f"entitlement {record.id} is {record.type}; only metered "
                                   "entitlements can be reset")  # fmt: skip
            spec = spec_of(record)
            resets = entitlements_repo.resets_of(tx, record.id)
            with field_named():
                reset = em.validate_reset(
                    spec, resets, now, inp.effective_at, inp.retain_anchor, inp.preserve_overage
                )
            in_force = em.timeline(spec, resets).input_in_force(reset.at).recurrence
            anchor = in_force.anchor if reset.retain_anchor else reset.at
            entitlements_repo.insert_reset(
                tx, self._new_id(), record.id, reset, anchor, interval_iso(in_force.interval),
                to_micros(now),
            )  # fmt: skip
            usage_marks.bump_scope(tx, record.owner.scope, record.feature_key)
