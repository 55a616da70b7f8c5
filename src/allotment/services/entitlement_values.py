"""Entitlement values and history: the metered math a value check or a history read runs.

Reads only, in one read transaction each, never writing: resolve the entitlement named by
the path, load its definitions (``storage.entitlement_reads``), fetch the usage it needs
once (``usage``: ``MeterQueryService``), then the pure engine (``domain.entitlement_math``).
A value check is first offered to the in-process value cache (``services/value_cache.py``);
:meth:`EntitlementValues.plain_value` is the reference it must equal.

:class:`~allotment.services.entitlements.EntitlementService` extends this class with the
lifecycle, so ``container.entitlements`` answers both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from allotment.domain import entitlement_math as em
from allotment.domain.engine import Aggregation, Phase, UsageFn
from allotment.domain.entitlement_inputs import EntitlementType
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import InvalidInput, field_named
from allotment.domain.features import Feature
from allotment.domain.periods import Period
from allotment.domain.timeutil import ceil_minute, floor_minute
from allotment.domain.usage_series import UsageSeries
from allotment.storage import entitlement_reads as reads
from allotment.storage.entitlement_reads import MeteredContext, OwnerRef

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.services.meter_queries import MeterQueryService
    from allotment.services.meters import MeterService
    from allotment.services.value_cache import ValueCache
    from allotment.storage.database import Database

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class HistoryView:
    history: em.History
    tz: ZoneInfo


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


class EntitlementValues:
    """Collaborators: the database and clock, ``meters`` (a feature's meter, for its
    aggregation), ``usage`` (the usage series the engine burns from) and ``cache`` (the
    in-process value cache, ``services/value_cache.py``; None: off)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        meters: MeterService,
        usage: MeterQueryService,
        cache: ValueCache | None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._meters = meters
        self._usage = usage
        self.cache = cache

    @property
    def inline_reads(self) -> bool:
        """Whether a cached value check may run on the event loop: its one read is a local
        SQLite point read of a few microseconds (PostgreSQL needs a round trip)."""
        return self.cache is not None and self._db.dialect == "sqlite"

    # ------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    def aggregation_of(self, feature: Feature) -> Aggregation:
        if feature.meter_slug is None:
            raise InvalidInput(f"feature {feature.key!r} has no meter")
        meter = self._meters.get(feature.meter_slug)
        return Aggregation(str(getattr(meter.aggregation, "value", meter.aggregation)))

    def _series(self, ctx: MeteredContext, period: Period) -> UsageSeries:
        assert ctx.feature.meter_slug is not None
        series: UsageSeries = self._usage.usage_series(
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
        with self._db.read() as tx:
            record = reads.resolve(tx, owner_ref, id_or_feature_key, at)
            if not record.active_at(at):
                return ValueView(False)
            if record.type == EntitlementType.BOOLEAN:
                return ValueView(True)
            if record.type == EntitlementType.STATIC:
                return ValueView(True, config=record.config)
            ctx = reads.metered_context(tx, record)
        aggregation = self.aggregation_of(ctx.feature)
        spec = reads.spec_of(record, aggregation)
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
        with self._db.read() as tx:
            record = reads.resolve(tx, owner_ref, entitlement_id, now)
            ctx = reads.metered_context(tx, record)
        aggregation = self.aggregation_of(ctx.feature)
        spec = reads.spec_of(record, aggregation)
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
