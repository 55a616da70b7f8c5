"""The ingest rate: stored events per minute of event time over the last minutes (the
operator console's ingest page). Read from the events table's time index, so it counts what
every replica stored, survives restarts, and costs a range scan of one index over the window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from allotment.clock import Clock
from allotment.domain.timeutil import floor_minute, from_micros, to_micros
from allotment.storage import events_repo
from allotment.storage.database import Database

MINUTE_US = 60_000_000


@dataclass(frozen=True)
class Rate:
    minutes: list[tuple[datetime, int]]
    """Every minute of the window, oldest first (the current minute last), with its events."""

    @property
    def total(self) -> int:
        return sum(n for _, n in self.minutes)

    @property
    def peak(self) -> int:
        return max((n for _, n in self.minutes), default=0)


class IngestRate:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def per_minute(self, minutes: int = 60) -> Rate:
        """The last ``minutes`` minutes of event time, the current (partial) one included."""
        end = floor_minute(self._clock.now()) + timedelta(minutes=1)
        start = end - timedelta(minutes=minutes)
        lo, hi = to_micros(start), to_micros(end)
        with self._db.read() as tx:
            counts = dict(events_repo.count_per_minute(tx, lo, hi))
        return Rate([(from_micros(m), counts.get(m, 0)) for m in range(lo, hi, MINUTE_US)])
