"""The in-process value-check cache: exact answers at the cost of one small SQL read.

What is cached, per process (see docs/api/entitlements.md, "Performance"):

* per (subject key, feature key) — a *scope* — every entitlement of that subject for that
  feature key, and for a metered one its spec, grants, resets and meter, tagged with the
  versions ``(catalog, scope)`` they were read under;
* per metered SUM/COUNT entitlement, a *checkpoint*: the engine state at a minute-aligned
  instant C, plus the subject's minute usage for ``[C, C + HORIZON)``, tagged with the
  (meter, subject) usage mark it was read under; a value at ``T >= C`` resumes the pure
  engine from C (equal to a run from ``measureUsageFrom``), and each answer is kept per
  ``ceil_minute(T)``.

Every check first reads, in one statement, the catalog and scope versions and the usage mark
(``storage/usage_marks.py``). Equal versions: answer from memory. A newer usage mark whose
missed versions all lie at or after C: re-read the open minutes only; otherwise (or when that
is unknown): recompute the checkpoint. Newer definitions: reload them. Reads never write.

UNIQUE_COUNT and LATEST meters, reads before the checkpoint or past the horizon, and anything
that fails to load take the plain path (``EntitlementValues.plain_value``).

Customer owners (``domain/owners.py``): the scope is (customer, feature key); the usage mark
is the sum of the marks of the customer's subjects (each only grows, so an unchanged sum means
no subject changed), and a checkpoint keeps each subject's mark to tell where missed events
lie. The subjects themselves are part of the scope: every change to them (a replace of the
customer, or of another customer whose key took precedence) bumps the customer's scopes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from allotment.domain import entitlement_math as em
from allotment.domain import value_cache as rules
from allotment.domain.engine import Aggregation, EngineState, Phase
from allotment.domain.entitlement_inputs import EntitlementType
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import DomainError
from allotment.domain.grants import Grant
from allotment.domain.ids import is_ulid
from allotment.domain.meters import Meter
from allotment.domain.owners import Owner
from allotment.domain.timeutil import ceil_minute, to_micros
from allotment.domain.usage_series import UsageSeries
from allotment.storage import entitlement_reads as reads
from allotment.storage import entitlements_repo, meters_repo, usage_marks
from allotment.storage.entitlements_repo import EntitlementRecord

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.services.meter_queries import MeterQueryService
    from allotment.storage.database import Database

ENV = "ALLOTMENT_VALUE_CACHE"
ENTRIES_ENV = "ALLOTMENT_VALUE_CACHE_ENTRIES"
DEFAULT_ENTRIES = 20_000
_CACHEABLE = (Aggregation.SUM, Aggregation.COUNT)
_ANSWERS_MAX = 16


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """``ALLOTMENT_VALUE_CACHE=off`` (or 0/false/no) turns the cache off."""
    raw = (os.environ if env is None else env).get(ENV, "on").strip().lower()
    return raw not in ("off", "0", "false", "no")


def max_entries(env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(ENTRIES_ENV, "")
    return max(1, int(raw)) if raw.strip() else DEFAULT_ENTRIES


@dataclass(slots=True)
class Answer:
    """One cached answer; ``body`` is the rendered wire form, filled by the first renderer."""

    view: ValueView
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Alias:
    """What a request's path parameters name: the scope, and the entitlement id when the
    second parameter was one. ``subject_id`` is the first parameter when it is a ULID (its
    key is re-checked on every read: subjects can change), ``subject_found`` the key it had."""

    owner: Owner
    feature_key: str
    entitlement_id: str | None = None
    subject_id: str | None = None
    subject_found: str | None = None


@dataclass(frozen=True, slots=True)
class _Metered:
    record: EntitlementRecord
    spec: em.MeteredSpec
    grants: tuple[Grant, ...]
    resets: tuple[em.ManualReset, ...]
    meter: Meter
    """Usage reads take it as is instead of looking it up; a change to any meter bumps the
    catalog version, which reloads the scope and this record."""
    group_filters: Mapping[str, str] | None
    subjects: tuple[str, ...]
    """Whose usage counts (any change to them bumps the scope)."""


@dataclass(slots=True)
class _Scope:
    versions: tuple[int, int]
    """(catalog, scope) when loaded."""
    records: tuple[EntitlementRecord, ...]
    metered: dict[str, _Metered | None] = field(default_factory=dict)
    """Per record id; None: not cacheable (the plain path answers)."""


@dataclass(slots=True)
class _Checkpoint:
    scope: _Scope
    """The definitions it was computed with (identity)."""
    mark: int
    """The usage mark it was read under (the sum of ``marks``)."""
    marks: tuple[int, ...]
    """Per subject of ``_Metered.subjects``."""
    at: datetime
    state: EngineState
    series: UsageSeries
    """Minute usage over ``[series start <= at, horizon)``."""
    horizon: datetime
    answers: dict[datetime, Answer] = field(default_factory=dict)


class ValueCache:
    """Collaborators: the database and clock, and ``usage`` (usage series and totals)."""

    def __init__(self, db: Database, clock: Clock, usage: MeterQueryService) -> None:
        self._db = db
        self._clock = clock
        self._usage = usage
        self._max = max_entries()
        self._lock = threading.Lock()
        self._aliases: dict[tuple[str | Owner, str], _Alias] = {}
        self._scopes: dict[tuple[Owner, str], _Scope] = {}
        self._checkpoints: dict[str, _Checkpoint] = {}

    # ------------------------------------------------------------ bookkeeping

    def clear(self) -> None:
        with self._lock:
            self._aliases.clear()
            self._scopes.clear()
            self._checkpoints.clear()

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        with self._lock:
            table.pop(key, None)
            table[key] = value
            while len(table) > self._max:
                del table[next(iter(table))]

    def _drop(self, table: dict[Any, Any], key: Any) -> None:
        with self._lock:
            table.pop(key, None)

    # ------------------------------------------------------------ the check

    def serve(
        self, subject_param: str | Owner, key_param: str, at: datetime, *, allow_io: bool
    ) -> Answer | None:
        """The value at ``at`` (aware UTC), or None when the plain path must answer (or,
        without ``allow_io``, when answering would need more than the one version read).
        Ingest's unfolded tail is folded first (``MeterQueryService.settle``): without
        ``allow_io`` a tail to fold means None."""
        if not self._usage.settle(allow_io=allow_io):
            return None
        for _ in range(3):
            answer = self._serve(subject_param, key_param, at, allow_io)
            if not isinstance(answer, _Retry):
                return answer
        return None

    def _serve(
        self, subject_param: str | Owner, key_param: str, at: datetime, allow_io: bool
    ) -> Answer | _Retry | None:
        alias = self._aliases.get((subject_param, key_param))
        if alias is None:
            ulid_subject = isinstance(subject_param, str) and is_ulid(subject_param)
            if not allow_io and (ulid_subject or is_ulid(key_param)):
                return None
            alias = self._load_alias(subject_param, key_param)
            if alias is None:
                return None
        scope_key = (alias.owner, alias.feature_key)
        scope = self._scopes.get(scope_key)
        if scope is None:
            if not allow_io:
                return None
            scope = self._load_scope(scope_key)
        record = _resolve(scope, alias, at)
        if record is None:
            return None  # the plain path says NotFound
        metered: _Metered | None = None
        active = record.active_at(at)
        if active and record.type == EntitlementType.METERED:
            if record.id not in scope.metered:
                if not allow_io:
                    return None
                self._load_metered(scope_key, scope, record)
            metered = scope.metered.get(record.id)
            if metered is None:
                return None
        catalog, scope_v, mark, found = usage_marks.current_versions(
            self._db, alias.owner.scope, alias.feature_key,
            metered.meter.id if metered is not None else None, alias.subject_id,
            metered.subjects if metered is not None else (),
        )  # fmt: skip
        if found != alias.subject_found:
            self._drop(self._aliases, (subject_param, key_param))
            return _RETRY if allow_io else None
        if (catalog, scope_v) != scope.versions:
            self._drop(self._scopes, scope_key)
            return _RETRY if allow_io else None
        if metered is not None:
            return self._metered_value(scope, metered, mark, ceil_minute(at), allow_io)
        if not active:
            return Answer(ValueView(False))
        if record.type == EntitlementType.BOOLEAN:
            return Answer(ValueView(True))
        if record.type == EntitlementType.STATIC:
            return Answer(ValueView(True, config=record.config))
        return None  # not reached: an active metered record has ``metered`` or returned above

    def _metered_value(
        self, scope: _Scope, m: _Metered, mark: int, until: datetime, allow_io: bool
    ) -> Answer | None:
        cp = self._checkpoints.get(m.record.id)
        if cp is None or cp.scope is not scope or cp.mark != mark or not cp.at <= until:
            if not allow_io:
                return None
            cp = self._refresh(scope, m, cp, until)
            if cp is None:
                return None
        elif until >= cp.horizon:
            if not allow_io:
                return None
            cp = self._refresh(scope, m, cp, until)
            if cp is None:
                return None
        answer = cp.answers.get(until)
        if answer is None:
            answer = Answer(_view(_resume(m, cp, until)))
            if len(cp.answers) >= _ANSWERS_MAX:
                cp.answers.clear()
            cp.answers[until] = answer
        return answer

    # ------------------------------------------------------------ loading (IO)

    def _load_alias(self, subject_param: str | Owner, key_param: str) -> _Alias | None:
        if isinstance(subject_param, Owner):
            alias = self._load_owner_alias(subject_param, key_param)
            if alias is None:
                return None
        elif not is_ulid(subject_param) and not is_ulid(key_param):
            alias = _Alias(Owner.subject(subject_param), key_param)
        else:
            with self._db.read() as tx:
                found = None
                if is_ulid(subject_param):
                    found = entitlements_repo.subject_key_of_id(tx, subject_param)
                subject_key = found or subject_param
                subject_id = subject_param if is_ulid(subject_param) else None
                owner = Owner.subject(subject_key)
                if is_ulid(key_param):
                    record = entitlements_repo.by_id(tx, key_param)
                    if record is None or record.owner != owner:
                        return None  # a feature key that looks like an id: plain path
                    alias = _Alias(owner, record.feature_key, record.id, subject_id, found)
                else:
                    alias = _Alias(owner, key_param, None, subject_id, found)
        self._put(self._aliases, (subject_param, key_param), alias)
        return alias

    def _load_owner_alias(self, owner: Owner, key_param: str) -> _Alias | None:
        if not is_ulid(key_param):
            return _Alias(owner, key_param)
        with self._db.read() as tx:
            record = entitlements_repo.by_id(tx, key_param)
        if record is None or record.owner != owner:
            return None  # a feature key that looks like an id: plain path
        return _Alias(owner, record.feature_key, record.id)

    def _load_scope(self, scope_key: tuple[Owner, str]) -> _Scope:
        owner, feature_key = scope_key
        with self._db.read() as tx:
            catalog, scope_v, _, _ = usage_marks.versions(tx, owner.scope, feature_key)
            records = usage_marks.entitlements_of(tx, owner, feature_key)
        scope = _Scope((catalog, scope_v), tuple(records))
        self._put(self._scopes, scope_key, scope)
        return scope

    def _load_metered(
        self, scope_key: tuple[Owner, str], scope: _Scope, record: EntitlementRecord
    ) -> None:
        """Fill ``scope.metered[record.id]`` (None when the plain path must answer)."""
        found: _Metered | None = None
        owner, feature_key = scope_key
        try:
            with self._db.read() as tx:
                catalog, scope_v, _, _ = usage_marks.versions(tx, owner.scope, feature_key)
                if (catalog, scope_v) != scope.versions:
                    return  # changed meanwhile: leave it unknown, the next read reloads
                ctx = reads.metered_context(tx, record)
                meter = meters_repo.get_live_by_slug(tx, str(ctx.feature.meter_slug))
            if meter is None:  # the plain path answers (and says why)
                self._set_metered(scope, record, None)
                return
            aggregation = Aggregation(str(getattr(meter.aggregation, "value", meter.aggregation)))
            if aggregation in _CACHEABLE:
                found = _Metered(
                    record, reads.spec_of(record, aggregation),
                    tuple(g.to_domain() for g in ctx.grants), tuple(ctx.resets), meter,
                    ctx.feature.group_filters, ctx.subjects,
                )  # fmt: skip
        except DomainError:
            found = None
        self._set_metered(scope, record, found)

    def _set_metered(self, scope: _Scope, record: EntitlementRecord, m: _Metered | None) -> None:
        with self._lock:
            scope.metered[record.id] = m

    def _refresh(
        self, scope: _Scope, m: _Metered, old: _Checkpoint | None, until: datetime
    ) -> _Checkpoint | None:
        """A checkpoint serving ``until``: the old one rolled forward when no event it missed
        lies before it, else a new one. None: the plain path answers."""
        now = ceil_minute(self._clock.now().astimezone(UTC))
        at = rules.checkpoint_for(until, now, m.spec.measure_usage_from)
        if at is None:
            return None
        horizon = at + rules.HORIZON
        with self._db.read() as tx:
            read = [usage_marks.mark(tx, m.meter.id, s) for s in m.subjects]
        marks = tuple(version for version, _ in read)
        earliest: int | None = None
        if old is not None and len(old.marks) == len(marks):
            earliest = rules.UNCHANGED
            for before, (version, slots) in zip(old.marks, read, strict=True):
                touched = rules.earliest_touched(before, version, slots)
                if touched is None:
                    earliest = None
                    break
                earliest = min(earliest, touched)
        keep = (
            old is not None
            and old.scope is scope
            and old.at <= at
            and earliest is not None
            and earliest >= to_micros(old.at)
        )
        if keep:
            assert old is not None
            series = self._series(m, old.at, horizon)
            state = _run_to(m, old.state, at, series)
        else:
            state = self._checkpoint_state(m, at)
            series = self._series(m, at, horizon)
        cp = _Checkpoint(scope, sum(marks), marks, at, state, series, horizon)
        self._put(self._checkpoints, m.record.id, cp)
        return cp

    def _series(self, m: _Metered, start: datetime, end: datetime) -> UsageSeries:
        series: UsageSeries = self._usage.usage_series(
            m.meter, m.subjects, m.group_filters, start, end
        )
        return series

    def _checkpoint_state(self, m: _Metered, at: datetime) -> EngineState:
        """The engine state at ``at`` from ``measureUsageFrom``, one usage total per phase."""
        plan = em.plan_value(m.spec, m.grants, m.resets, at)
        ranges = [(p.from_, p.to) for p in plan.phases]
        usage = dict(zip(ranges, self._totals(m, ranges), strict=True))

        def per_phase(phase: Phase) -> Decimal:
            return usage[phase.from_, phase.to]

        return em.value_from_usage(m.spec, m.grants, plan, per_phase).state

    def _totals(self, m: _Metered, ranges: Sequence[tuple[datetime, datetime]]) -> list[Decimal]:
        if not ranges:
            return []
        return self._usage.usage_totals(m.meter, m.subjects, m.group_filters, ranges)


class _Retry:
    pass


_RETRY = _Retry()


def _resolve(scope: _Scope, alias: _Alias, at: datetime) -> EntitlementRecord | None:
    """``entitlement_reads.resolve`` on the cached rows: the named entitlement, or the newest
    one for the feature key active at ``at`` (same rule as the SQL)."""
    if alias.entitlement_id is not None:
        for r in scope.records:
            if r.id == alias.entitlement_id:
                return r
        return None
    best: EntitlementRecord | None = None
    for r in scope.records:
        if (
            r.active_from <= at
            and (r.active_to is None or r.active_to > at)
            and (r.deleted_at is None or r.deleted_at > at)
            and (best is None or (r.active_from, r.id) > (best.active_from, best.id))
        ):
            best = r
    return best


def _run_to(m: _Metered, start: EngineState, at: datetime, series: UsageSeries) -> EngineState:
    if at == start.at:
        return start
    return _value_at(m, start, at, series).state


def _value_at(
    m: _Metered, start: EngineState, until: datetime, series: UsageSeries
) -> em.MeteredValue:
    plan = em.plan_value(m.spec, m.grants, m.resets, until, start)

    def per_phase(phase: Phase) -> Decimal:
        return series.total(phase.from_, phase.to)

    return em.value_from_usage(m.spec, m.grants, plan, per_phase)


def _resume(m: _Metered, cp: _Checkpoint, until: datetime) -> em.MeteredValue:
    return _value_at(m, cp.state, until, cp.series)


def _view(value: em.MeteredValue) -> ValueView:
    return ValueView(value.has_access, value)


Renderer = Callable[[ValueView], bytes]
