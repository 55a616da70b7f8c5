"""Usage rollups, maintained at ingest (and rebuilt on meter create / groupBy change).

Tables (schema in migrations 0001 and 0400):

``usage_minute(meter_id, subject, minute, group_key, count, sum, min, max, latest_time,
latest_value)``
    One row per meter, subject, minute and group. ``minute`` is the event time floored to the
    minute, in epoch microseconds (UTC). ``group_key`` is
    :func:`allotment.domain.meters.group_key` of the meter's groupBy values for the event
    (canonical JSON with sorted keys, ``{}`` for a meter without groupBy; a missing path is
    ``""``). Only events that fit the meter (``extract`` succeeded, ``time >= eventFrom``) are
    counted.

    * ``count``: number of such events (every aggregation, UNIQUE_COUNT included).
    * ``sum``/``min``/``max``: exact decimals of the values (NULL for COUNT and UNIQUE_COUNT).
      AVG = ``sum / count`` over the rows of a window.
    * ``latest_time``/``latest_value``: the value of the event with the greatest time (ties:
      the one ingested last); NULL for COUNT and UNIQUE_COUNT.

    * ``isum``: ``sum`` as an integer when it is one within ``±ISUM_MAX``, else NULL (so
      SQLite can add integer sums natively and send only the rest through ``dec_sum``).

``usage_hour`` / ``usage_day`` (``bucket`` instead of ``minute``)
    The same columns per UTC hour / UTC day: the fold of the minute rows inside the bucket.
    Each batch is folded per grain in Python first, so each grain gets one upsert per key.

``usage_unique(meter_id, subject, minute, group_key, value)``
    UNIQUE_COUNT meters only: each distinct stringified value seen in that minute and group.
    Count distinct ``value`` over the rows of a window.

``usage_meter_hour`` / ``usage_meter_day`` (``storage/meter_rollup.py``)
    The hour and day cells with the subject dropped (count, sum, isum), written by
    :meth:`Folded.write` after the grains above: what a meter query over every subject reads.

Both are written only for events that were actually inserted (dedup), in the same
transaction as the events, so a committed event is counted exactly once.

A little over 500 lines: one job, what a batch of events adds to the rollups (the cells, their
fold per grain and the rows upserted), kept together because the fast paths of issue 18 (cells
shared between grains, columns built once per cell, SQLite's text rows and native conflict
path) depend on how each part builds the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from operator import itemgetter
from typing import Any

import msgspec

from allotment.domain.decimals import EXACT
from allotment.domain.json_bounds import exact_decimal
from allotment.domain.meters import Aggregation, Extracted, MeterDefinition, extract, group_key
from allotment.domain.timeutil import to_micros
from allotment.storage import decimal_sql, meter_rollup, usage_marks
from allotment.storage.database import Tx

_CHUNK = 400
MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
ISUM_MAX = 2**53
"""Bound of ``isum``: native SQLite ``sum()`` over up to 1024 such rows cannot overflow (and
a read that does overflow is re-run on the exact decimals, see ``usage_sums``)."""
_decode_event = msgspec.json.Decoder(float_hook=exact_decimal)
_EXACT = EXACT
"""Sums inside one batch keep 60 significant digits (the default context keeps only 28)."""


@dataclass(slots=True)
class _Cell:
    count: int
    sum: Decimal | None
    min: Decimal | None
    max: Decimal | None
    latest_time: int | None
    latest_value: Decimal | None
    latest_key: tuple[str, str] = ("", "")
    """``(source, id)`` of the latest event: breaks a tie on ``latest_time`` when two folds
    made apart are merged (the greater key was inserted later in the same transaction)."""

    def copy(self) -> _Cell:
        return _Cell(
            self.count,
            self.sum,
            self.min,
            self.max,
            self.latest_time,
            self.latest_value,
            self.latest_key,
        )


Target = tuple[str, MeterDefinition, int | None]
"""(meter id, definition, eventFrom in µs or None)"""


@dataclass(frozen=True, slots=True)
class Grain:
    """One rollup table: ``column`` holds the bucket start (epoch µs, UTC), ``step`` long."""

    table: str
    column: str
    step: int

    @property
    def upsert_head(self) -> str:
        return (
            f"INSERT INTO {self.table} (meter_id, subject, {self.column}, group_key, count, sum,"
            " min, max, latest_time, latest_value, isum) VALUES "
        )

    @property
    def upsert_tail(self) -> str:
        """The conflict clause, through ``dec_add``/``dec_min``/``dec_max`` (either engine)."""
        t = self.table
        return self._tail(
            f"dec_add({t}.sum, excluded.sum)",
            f"dec_min({t}.min, excluded.min)",
            f"dec_max({t}.max, excluded.max)",
        )

    @property
    def sqlite_upsert_tail(self) -> str:
        """:attr:`upsert_tail` with SQLite's native integer paths (``decimal_sql.add_sql``):
        the same rows, fewer calls into Python."""
        t = self.table
        return self._tail(
            decimal_sql.add_sql(f"{t}.sum", "excluded.sum", f"{t}.isum", "excluded.isum"),
            decimal_sql.min_sql(f"{t}.min", "excluded.min"),
            decimal_sql.max_sql(f"{t}.max", "excluded.max"),
        )

    def _tail(self, add: str, least: str, greatest: str) -> str:
        t = self.table
        return (
            f" ON CONFLICT (meter_id, subject, {self.column}, group_key) DO UPDATE SET "
            f"count = {t}.count + excluded.count, "
            f"sum = {add}, "
            f"min = {least}, "
            f"max = {greatest}, "
            f"latest_value = CASE WHEN {t}.latest_time IS NULL "
            f"OR excluded.latest_time >= {t}.latest_time "
            f"THEN excluded.latest_value ELSE {t}.latest_value END, "
            f"latest_time = CASE WHEN {t}.latest_time IS NULL "
            f"OR excluded.latest_time >= {t}.latest_time "
            f"THEN excluded.latest_time ELSE {t}.latest_time END, "
            # both sides within ±2^53, so the sum cannot overflow before it is checked
            f"isum = CASE WHEN {t}.isum IS NOT NULL AND excluded.isum IS NOT NULL "
            f"AND abs({t}.isum + excluded.isum) <= {ISUM_MAX} "
            f"THEN {t}.isum + excluded.isum END"
        )


MINUTE_GRAIN = Grain("usage_minute", "minute", MINUTE_US)
HOUR_GRAIN = Grain("usage_hour", "bucket", HOUR_US)
DAY_GRAIN = Grain("usage_day", "bucket", DAY_US)
GRAINS = (MINUTE_GRAIN, HOUR_GRAIN, DAY_GRAIN)
"""Finest first. Every grain holds the same usage: a coarser row is the fold of the finer
rows inside its bucket (migration 0400)."""
_ROW = "(?,?,?,?,?,?,?,?,?,?,?)"

CellKey = tuple[str, str, int, str]
"""(meter id, subject, bucket start µs, group key)"""
UniqueKey = tuple[str, str, int, str, str]
"""(meter id, subject, minute µs, group key, value)"""

_group_keys: dict[tuple[tuple[str, str], ...], str] = {}
_GROUP_KEYS_MAX = 50_000


def _group_key_of(groups: tuple[tuple[str, str], ...]) -> str:
    """:func:`group_key`, memoised (a meter's events share a handful of group values)."""
    key = _group_keys.get(groups)
    if key is None:
        if len(_group_keys) >= _GROUP_KEYS_MAX:
            _group_keys.clear()
        key = _group_keys[groups] = group_key(dict(groups))
    return key


class Folded:
    """What a set of events adds to the rollups, per grain, ready to upsert: no IO to build,
    so request threads build it while the writer is busy (see ``EventService.prefold``).

    ``touched`` holds, per (meter, subject), the earliest minute touched (for the usage
    marks). Folds are combined with :meth:`combine`, which never mutates its inputs.
    """

    __slots__ = ("grains", "minutes_in_order", "touched", "uniques")

    def __init__(
        self,
        grains: tuple[dict[CellKey, _Cell], ...],
        uniques: set[UniqueKey],
        touched: dict[tuple[str, str], int],
        minutes_in_order: bool = False,
    ) -> None:
        self.grains = grains
        self.uniques = uniques
        self.touched = touched
        self.minutes_in_order = minutes_in_order
        """The minute grain's dict is in key order already (``Rollup.fold``): not sorted
        again for the upsert."""

    @classmethod
    def combine(cls, parts: Sequence[Folded]) -> Folded:
        """One fold equal to folding every part's events together (inputs left untouched)."""
        if len(parts) == 1:
            return parts[0]
        grains: list[dict[CellKey, _Cell]] = []
        for g in range(len(GRAINS)):
            out: dict[CellKey, _Cell] = {}
            for part in parts:
                for key, cell in part.grains[g].items():
                    have = out.get(key)
                    if have is None:
                        out[key] = cell
                    else:
                        merged = have.copy()
                        _merge(merged, cell)
                        out[key] = merged
            grains.append(out)
        uniques: set[UniqueKey] = set()
        touched: dict[tuple[str, str], int] = {}
        for part in parts:
            uniques |= part.uniques
            for mk, minute in part.touched.items():
                seen = touched.get(mk)
                if seen is None or minute < seen:
                    touched[mk] = minute
        return cls(tuple(grains), uniques, touched)

    def __len__(self) -> int:
        return len(self.grains[0])

    def write(self, tx: Tx) -> None:
        """Upsert every grain (minute, hour, day), one upsert per key and grain, each sorted so
        concurrent writers lock rows in the same order; then the UNIQUE_COUNT values; last
        the per-meter hour and day rows (``meter_rollup``: the same cells, subjects dropped).

        PostgreSQL gets one statement per grain whose rows are arrays (``unnest``): parsing
        and planning no longer grow with the rows, as multi-row ``VALUES`` lists do."""
        if tx.dialect == "postgresql":
            self._write_arrays(tx)
        else:
            self._write_values(tx)
        meter_rollup.write(tx, {HOUR_US: self.grains[1], DAY_US: self.grains[2]})

    def _rows(self, text: bool) -> list[list[tuple[Any, ...]]]:
        """Each grain's upsert rows, in key order; ``text``: the decimals as SQLite stores
        them (``str``, what the connection's adapter would bind). A coarser cell that is its
        finer cell (a bucket of one, ``_coarsen``) is the same object: its columns are built
        once."""
        columns = _text_columns if text else _columns
        built: dict[int, tuple[Any, ...]] = {}
        out: list[list[tuple[Any, ...]]] = []
        for g, cells in enumerate(self.grains):
            rows = []
            ordered = list(cells.items()) if g == 0 and self.minutes_in_order else None
            for key, c in ordered if ordered is not None else _in_key_order(cells):
                cols = built.get(id(c))
                if cols is None:
                    cols = built[id(c)] = columns(c)
                rows.append(key + cols)
            out.append(rows)
        return out

    def _write_values(self, tx: Tx) -> None:
        for grain, rows in zip(GRAINS, self._rows(text=True), strict=True):
            head, tail = grain.upsert_head, grain.sqlite_upsert_tail
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                tx.execute(
                    head + ",".join([_ROW] * len(chunk)) + tail, list(chain.from_iterable(chunk))
                )
        uniques = sorted(self.uniques)
        for start in range(0, len(uniques), _CHUNK):
            chunk2 = uniques[start : start + _CHUNK]
            tx.execute(
                "INSERT INTO usage_unique (meter_id, subject, minute, group_key, value) VALUES "
                + ",".join(["(?,?,?,?,?)"] * len(chunk2))
                + " ON CONFLICT (meter_id, subject, minute, group_key, value) DO NOTHING",
                list(chain.from_iterable(chunk2)),
            )

    def _write_arrays(self, tx: Tx) -> None:
        for grain, rows in zip(GRAINS, self._rows(text=False), strict=True):
            for start in range(0, len(rows), _ARRAY_CHUNK):
                chunk = rows[start : start + _ARRAY_CHUNK]
                tx.execute(
                    grain.upsert_head.replace(" VALUES ", " ") + _UNNEST_CELLS + grain.upsert_tail,
                    [list(column) for column in zip(*chunk, strict=True)],
                )
        uniques = sorted(self.uniques)
        for start in range(0, len(uniques), _ARRAY_CHUNK):
            chunk2 = uniques[start : start + _ARRAY_CHUNK]
            tx.execute(
                "INSERT INTO usage_unique (meter_id, subject, minute, group_key, value) "
                "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[])"
                " ON CONFLICT (meter_id, subject, minute, group_key, value) DO NOTHING",
                [list(column) for column in zip(*chunk2, strict=True)],
            )


_ARRAY_CHUNK = 10_000
"""Rows per array statement on PostgreSQL."""
_UNNEST_CELLS = (
    "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[], ?::bigint[], "
    "?::numeric[], ?::numeric[], ?::numeric[], ?::bigint[], ?::numeric[], ?::bigint[])"
)


class Rollup:
    """Aggregates events in memory per (meter, subject, minute, group), then folds them into
    every grain (:meth:`fold`) or upserts them (:meth:`flush`)."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, str, int, tuple[tuple[str, str], ...]], _Cell] = {}
        self._unique: set[tuple[str, str, int, tuple[tuple[str, str], ...], str]] = set()

    def add(
        self,
        meter_id: str,
        meter: MeterDefinition,
        subject: str,
        time_us: int,
        data: Any,
        key: tuple[str, str] = ("", ""),
    ) -> None:
        result = extract(meter, data)
        if isinstance(result, str):
            return
        self.add_extracted(meter_id, meter.aggregation, subject, time_us, result, key)

    def add_extracted(
        self,
        meter_id: str,
        aggregation: Aggregation,
        subject: str,
        time_us: int,
        ex: Extracted,
        key: tuple[str, str] = ("", ""),
    ) -> None:
        """Add one event; events must come in insertion order (a later one wins a tie on
        time for LATEST). ``key`` is the event's ``(source, id)`` when known."""
        groups = tuple(ex.groups.items())  # extract() fills them in sorted key order
        minute = time_us - time_us % MINUTE_US  # floor_minute_us, inline
        ckey = (meter_id, subject, minute, groups)
        cell = self._cells.get(ckey)
        value = ex.value
        if cell is None:
            if value is None:
                cell = _Cell(1, None, None, None, None, None)
            else:
                cell = _Cell(1, value, value, value, time_us, value, key)
            self._cells[ckey] = cell
        else:
            cell.count += 1
            if value is not None:
                if cell.sum is None or cell.min is None or cell.max is None:
                    cell.sum, cell.min, cell.max = value, value, value
                else:
                    cell.sum = _EXACT.add(cell.sum, value)
                    if value < cell.min:
                        cell.min = value
                    if value > cell.max:
                        cell.max = value
                if cell.latest_time is None or time_us >= cell.latest_time:
                    cell.latest_time, cell.latest_value, cell.latest_key = time_us, value, key
        if aggregation is Aggregation.UNIQUE_COUNT and ex.unique is not None:
            self._unique.add((meter_id, subject, minute, groups, ex.unique))

    def __len__(self) -> int:
        return len(self._cells)

    def fold(self) -> Folded:
        """Everything added so far, per grain (the accumulator is left as it is)."""
        keyed: list[tuple[CellKey, _Cell]] = []
        touched: dict[tuple[str, str], int] = {}
        for (meter_id, subject, minute, groups), c in self._cells.items():
            keyed.append(((meter_id, subject, minute, _group_key_of(groups)), c))
            mk = (meter_id, subject)
            seen = touched.get(mk)
            if seen is None or minute < seen:
                touched[mk] = minute
        # in key order: the coarser grains, built in this order, come out nearly sorted, so
        # sorting them for the upsert (``_in_key_order``) costs little
        keyed.sort(key=_KEY)
        minute_cells = dict(keyed)
        hour_cells = _coarsen(minute_cells, HOUR_US)
        day_cells = _coarsen(hour_cells, DAY_US)
        uniques = {
            (meter_id, subject, minute, _group_key_of(groups), value)
            for meter_id, subject, minute, groups, value in self._unique
        }
        return Folded((minute_cells, hour_cells, day_cells), uniques, touched, True)

    def flush(self, tx: Tx) -> None:
        """Upsert everything accumulated into every grain, then start afresh."""
        self.fold().write(tx)
        self._cells = {}
        self._unique = set()


int_sum = meter_rollup.int_shadow
"""The ``isum`` column for a sum: the integer when ``value`` is one with ``|value| <= ISUM_MAX``,
else None (then readers use the exact decimal ``sum``); one definition for the per-subject
grains and the per-meter rows (``meter_rollup``)."""


_KEY = itemgetter(0)


def _in_key_order(cells: Mapping[CellKey, _Cell]) -> list[tuple[CellKey, _Cell]]:
    """The cells sorted by key (the order every writer upserts in). Sorting on the key alone
    (not on ``(key, cell)`` pairs) compares each pair of keys once; on cells built nearly in
    order (``Rollup.fold``) the sort is about linear."""
    return sorted(cells.items(), key=_KEY)


def _columns(c: _Cell) -> tuple[Any, ...]:
    return (c.count, c.sum, c.min, c.max, c.latest_time, c.latest_value, int_sum(c.sum))


def _text_columns(c: _Cell) -> tuple[Any, ...]:
    """:func:`_columns` with the decimals as text (SQLite's TEXT columns): one ``str`` for
    the same value in several columns (a cell of one event: sum, min, max and latest)."""
    total = c.sum
    if total is None:
        return (c.count, None, None, None, c.latest_time, _text(c.latest_value), None)
    t = str(total)
    lo, hi, last = c.min, c.max, c.latest_value
    return (
        c.count,
        t,
        t if lo is total else _text(lo),
        t if hi is total else _text(hi),
        c.latest_time,
        t if last is total else _text(last),
        _isum_of_text(t, total),
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _isum_of_text(text: str, value: Decimal) -> int | None:
    """:func:`int_sum` of ``value`` whose ``str`` is ``text``: plain integer text (what a
    Decimal of exponent 0 prints, ``-0`` included) is converted directly, the rest (``2.0``,
    ``1E+3``, fractions) takes the decimal path."""
    digits = text[1:] if text[:1] == "-" else text
    if len(digits) <= 16 and digits.isdigit():
        as_int = int(text)
        return as_int if -ISUM_MAX <= as_int <= ISUM_MAX else None
    return int_sum(value)


def _merge(into: _Cell, c: _Cell) -> None:
    """Fold ``c`` into ``into`` as the upsert would; on a tie on ``latest_time`` the event
    inserted later (the greater ``(source, id)``, see ``EventService.write_batches``) wins."""
    into.count += c.count
    if c.sum is not None:
        into.sum = c.sum if into.sum is None else _EXACT.add(into.sum, c.sum)
    if c.min is not None and (into.min is None or c.min < into.min):
        into.min = c.min
    if c.max is not None and (into.max is None or c.max > into.max):
        into.max = c.max
    if c.latest_time is not None and (
        into.latest_time is None
        or c.latest_time > into.latest_time
        or (c.latest_time == into.latest_time and c.latest_key > into.latest_key)
    ):
        into.latest_time, into.latest_value, into.latest_key = (
            c.latest_time,
            c.latest_value,
            c.latest_key,
        )


def _coarsen(cells: Mapping[CellKey, _Cell], step: int) -> dict[CellKey, _Cell]:
    """The cells folded per ``step`` bucket. A bucket of one cell shares that cell (a fold is
    never mutated once built: ``Folded.combine`` copies before it merges); a bucket of several
    gets a new cell."""
    out: dict[CellKey, _Cell] = {}
    fresh: set[CellKey] = set()
    for (meter_id, subject, start, gkey), c in cells.items():
        key = (meter_id, subject, start - start % step, gkey)
        have = out.get(key)
        if have is None:
            out[key] = c
        else:
            if key not in fresh:
                have = out[key] = have.copy()
                fresh.add(key)
            _merge(have, c)
    return out


def targets(meters: Iterable[tuple[str, MeterDefinition]]) -> dict[str, list[Target]]:
    """Meters grouped by event type, ready for :func:`aggregate_events`."""
    out: dict[str, list[Target]] = {}
    for meter_id, meter in meters:
        start = to_micros(meter.event_from) if meter.event_from is not None else None
        out.setdefault(meter.event_type, []).append((meter_id, meter, start))
    return out


def fold_events(
    by_type: Mapping[str, Sequence[Target]],
    events: Iterable[tuple[str, str, int, Any]] | Iterable[tuple[str, str, int, Any, str, str]],
) -> Folded:
    """What ``(type, subject, time_us, data[, source, id])`` events, in insertion order, add
    to the rollups of the matching meters. Pure: no IO."""
    rollup = Rollup()
    add = rollup.add_extracted
    for ev in events:
        event_type, subject, time_us, data = ev[0], ev[1], ev[2], ev[3]
        key = (ev[4], ev[5]) if len(ev) == 6 else ("", "")
        for meter_id, meter, start in by_type.get(event_type, ()):
            if start is not None and time_us < start:
                continue
            result = extract(meter, data)  # what Rollup.add does, one call less per event
            if not isinstance(result, str):
                add(meter_id, meter.aggregation, subject, time_us, result, key)
    return rollup.fold()


def write_folded(tx: Tx, folded: Folded) -> None:
    """Announce (usage marks, for the value cache) and upsert a fold, in the caller's
    transaction."""
    usage_marks.bump_touched(tx, folded.touched)
    folded.write(tx)


def aggregate_events(
    tx: Tx,
    by_type: Mapping[str, Sequence[Target]],
    events: Iterable[tuple[str, str, int, Any]],
) -> None:
    """Fold ``(type, subject, time_us, data)`` events into the rollups of matching meters."""
    write_folded(tx, fold_events(by_type, events))


def backfill(tx: Tx, meter_id: str, meter: MeterDefinition) -> None:
    """Rebuild one meter's rollups from every stored event of its type (deletes first)."""
    from allotment.storage import events_repo

    delete_rollups(tx, meter_id)
    start = to_micros(meter.event_from) if meter.event_from is not None else None
    rollup = Rollup()
    for page in events_repo.scan_type(tx, meter.event_type, start):
        for subject, time_us, event_json in page:
            event = _decode_event.decode(event_json)
            rollup.add(meter_id, meter, subject, time_us, event.get("data"))
        if len(rollup) > 20_000:
            rollup.flush(tx)
    rollup.flush(tx)


def delete_rollups(tx: Tx, meter_id: str) -> None:
    for grain in GRAINS:
        tx.execute(f"DELETE FROM {grain.table} WHERE meter_id = ?", (meter_id,))
    tx.execute("DELETE FROM usage_unique WHERE meter_id = ?", (meter_id,))
    meter_rollup.delete(tx, meter_id)
