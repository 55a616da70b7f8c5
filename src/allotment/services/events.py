"""Events: exactly-once ingest with rollup maintenance, and the raw event listing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from allotment.domain import limits
from allotment.domain.errors import InvalidInput
from allotment.domain.events import CloudEvent, dedupe
from allotment.domain.meters import Meter, extract
from allotment.domain.timeutil import format_rfc3339, from_micros, to_micros
from allotment.storage import events_repo, meters_repo, usage_write

if TYPE_CHECKING:
    from allotment.container import Container

_encoder = msgspec.json.Encoder(decimal_format="number")
_decoder = msgspec.json.Decoder(float_hook=Decimal)


@dataclass(frozen=True)
class EventQuery:
    """``GET /api/v1/events`` parameters (already parsed; windows are checked here)."""

    from_: datetime | None = None
    to: datetime | None = None
    ingested_at_from: datetime | None = None
    ingested_at_to: datetime | None = None
    id: str | None = None
    subject: str | None = None
    has_error: bool | None = None
    limit: int = limits.EVENTS_LIST_LIMIT_DEFAULT


class EventService:
    def __init__(self, container: Container) -> None:
        self._c = container

    # ------------------------------------------------------------ ingest

    def ingest(self, events: Sequence[CloudEvent]) -> int:
        """Store a validated batch exactly once and fold the new events into the rollups.

        Everything happens in one transaction: when this returns, the events are durable and
        counted; repeats of an already stored ``(source, id)`` (earlier, in this batch, or
        concurrently from another process) are skipped and never counted twice. Returns the
        number of events actually stored.
        """
        if not events:
            return 0
        unique = dedupe(events)
        unique.sort(key=lambda e: (e.source, e.id))
        now_us = self._c.now_us()
        rows = [
            (
                e.source,
                e.id,
                e.type,
                e.subject,
                e.time_us,
                now_us,
                _encoder.encode(e.to_wire()).decode(),
            )
            for e in unique
        ]
        db = self._c.db
        with db.write() as tx:
            meters_repo.lock_for_ingest(tx, db.dialect)
            inserted = events_repo.insert_new(tx, rows)
            if not inserted:
                return 0
            fresh = [e for e in unique if (e.source, e.id) in inserted]
            meters = meters_repo.live_by_event_types(tx, {e.type for e in fresh})
            if meters:
                by_type = usage_write.targets((m.id, m) for m in meters)
                usage_write.aggregate_events(
                    tx, by_type, ((e.type, e.subject, e.time_us, e.data) for e in fresh)
                )
        return len(inserted)

    # ------------------------------------------------------------ list

    def list(self, q: EventQuery) -> list[dict[str, Any]]:
        """Stored events, newest first, with ``validationError`` against the current meters."""
        now = self._c.clock.now()
        oldest = now - timedelta(days=limits.EVENTS_LIST_WINDOW_DAYS)
        start = q.from_ if q.from_ is not None else oldest
        if start < oldest:
            raise InvalidInput(
                f"query parameter from: must not be more than {limits.EVENTS_LIST_WINDOW_DAYS} "
                f"days ago (earliest allowed: {format_rfc3339(oldest)})",
                field="from",
            )
        if q.to is not None and q.to < start:
            raise InvalidInput("query parameter to: must not be before from", field="to")
        if (
            q.ingested_at_from is not None
            and q.ingested_at_to is not None
            and q.ingested_at_to < q.ingested_at_from
        ):
            raise InvalidInput(
                "query parameter ingestedAtTo: must not be before ingestedAtFrom",
                field="ingestedAtTo",
            )
        if not 1 <= q.limit <= limits.EVENTS_LIST_LIMIT_MAX:
            raise InvalidInput(
                f"query parameter limit: must be between 1 and {limits.EVENTS_LIST_LIMIT_MAX}",
                field="limit",
            )
        f = events_repo.EventFilter(
            from_us=to_micros(start),
            to_us=to_micros(q.to) if q.to is not None else None,
            ingested_from_us=to_micros(q.ingested_at_from) if q.ingested_at_from else None,
            ingested_to_us=to_micros(q.ingested_at_to) if q.ingested_at_to else None,
            id_contains=q.id,
            subject=q.subject,
        )
        out: list[dict[str, Any]] = []
        meters_of: dict[str, list[Meter]] = {}
        before: tuple[int, int] | None = None
        page = q.limit if q.has_error is None else max(q.limit, 500)
        with self._c.db.read() as tx:
            while len(out) < q.limit:
                rows = events_repo.list_page(tx, f, page, before)
                for row in rows:
                    if row.type not in meters_of:
                        meters_of[row.type] = meters_repo.live_by_event_types(tx, [row.type])
                    item = _listed(row, meters_of[row.type])
                    if q.has_error is not None and ("validationError" in item) != q.has_error:
                        continue
                    out.append(item)
                    if len(out) == q.limit:
                        break
                if len(rows) < page:
                    break
                before = (rows[-1].time_us, rows[-1].seq)
        return out


def validation_error(event_type: str, data: Any, meters: Sequence[Meter]) -> str | None:
    """OpenMeter's read-time check of a stored event against the meters of its type."""
    if not meters:
        return f"no meter found for event type: {event_type}"
    errors = []
    for meter in sorted(meters, key=lambda m: m.slug):
        result = extract(meter, data)
        if isinstance(result, str):
            errors.append(result)
    return "\n".join(errors) if errors else None


def _listed(row: events_repo.ListedEvent, meters: Sequence[Meter]) -> dict[str, Any]:
    event = _decoder.decode(row.event_json)
    item: dict[str, Any] = {"event": event}
    error = validation_error(row.type, event.get("data"), meters)
    if error is not None:
        item["validationError"] = error
    ingested = format_rfc3339(from_micros(row.ingested_at_us))
    item["ingestedAt"] = ingested
    item["storedAt"] = ingested
    return item
