"""Meter queries and usage reads: the OpenMeter meter query, subjects, groupBy values, and the
in-memory usage series the entitlement engine burns from.

Reads run in one read transaction; pure logic lives in ``domain.windows`` and
``domain.usage_series``; SQL in ``storage.usage_read``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

from allotment.domain.meters import Aggregation, Meter, decode_group_key
from allotment.domain.timeutil import require_aware, to_micros
from allotment.domain.usage_series import (
    GroupFilter,
    UsageSeries,
    exact_filters,
    matches_all,
    merge_minute_rows,
)
from allotment.storage import usage_read

if TYPE_CHECKING:
    from allotment.container import Container


@lru_cache(maxsize=4096)
def _groups(key: str) -> Mapping[str, str]:
    return decode_group_key(key)


def _keep(filters: tuple[GroupFilter, ...], key: str) -> bool:
    return not filters or matches_all(filters, _groups(key))


class MeterQueryService:
    def __init__(self, container: Container) -> None:
        self._c = container

    def _meter(self, meter_id_or_slug: str) -> Meter:
        meter: Meter = self._c.meters.get(meter_id_or_slug)
        return meter

    # ------------------------------------------------------------ entitlement usage

    def usage_series(
        self,
        meter_id_or_slug: str,
        subject: str,
        group_filters: Mapping[str, str] | None,
        start: datetime,
        end: datetime,
    ) -> UsageSeries:
        """One subject's usage of a meter over minute-aligned ``[start, end)``, fetched once.

        ``group_filters`` are exact matches on the meter's groupBy values (a feature's
        meterGroupByFilters). SUM/COUNT answer ``total``, UNIQUE_COUNT ``unique``, LATEST
        ``latest``; other aggregations answer ``total`` with the sum.
        """
        meter = self._meter(meter_id_or_slug)
        start, end = require_aware(start, "start"), require_aware(end, "end")
        filters = exact_filters(group_filters)
        lo, hi = to_micros(start), to_micros(end)
        with self._c.db.read() as tx:
            minutes = usage_read.minute_rows(tx, meter.id, lo, hi, [subject])
            uniques = (
                usage_read.unique_rows(tx, meter.id, lo, hi, [subject])
                if meter.aggregation is Aggregation.UNIQUE_COUNT
                else []
            )
        count = meter.aggregation is Aggregation.COUNT
        merged = merge_minute_rows(
            [
                (
                    r.minute,
                    Decimal(r.count) if count else (r.sum or Decimal(0)),
                    r.latest_time,
                    r.latest_value,
                )
                for r in minutes
                if _keep(filters, r.group_key)
            ]
        )
        values = [(u.minute, u.value) for u in uniques if _keep(filters, u.group_key)]
        return UsageSeries(start, end, merged, values)
