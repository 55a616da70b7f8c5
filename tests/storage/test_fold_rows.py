"""The rows the fold upserts (``usage_write``): the fast paths of issue 18 build exactly what
the plain ones did — SQLite's text columns are the adapter's ``str`` of every decimal, the
integer shadow from text equals :func:`int_sum` (integers and decimals mixed, negatives, ``-0``,
``2.0``, exponents, values past 2^53) — and sharing a cell between grains never lets a merge
change a fold already built."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from allotment.domain.meters import Aggregation, Extracted
from allotment.storage import decimal_sql, usage_write
from allotment.storage.usage_write import ISUM_MAX, Folded, Rollup, int_sum

_EDGES = [
    "0",
    "-0",
    "0.000",
    "0E+2",
    "2.0",
    "-2.50",
    "1E+3",
    "-1E-3",
    "12.5",
    str(ISUM_MAX),
    str(-ISUM_MAX),
    str(ISUM_MAX + 1),
    str(-ISUM_MAX - 1),
    "9999999999999999",
    "99999999999999999",
    "123456789012345678901234567890",
    "9007199254740992.0",
    "9007199254740992.5",
]

decimals = st.one_of(
    st.sampled_from([Decimal(t) for t in _EDGES]),
    st.integers(-(2**70), 2**70).map(Decimal),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=3, min_value=-(10**20), max_value=10**20
    ),
)


@given(decimals)
def test_isum_of_text_equals_int_sum(value: Decimal) -> None:
    assert usage_write._isum_of_text(str(value), value) == int_sum(value)


def _adapted(columns: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(str(v) if isinstance(v, Decimal) else v for v in columns)


@given(st.lists(st.tuples(decimals, st.integers(0, 3)), min_size=1, max_size=6))
def test_text_columns_are_what_the_adapter_binds(values: list[tuple[Decimal, int]]) -> None:
    rollup = Rollup()
    for i, (value, minute) in enumerate(values):
        rollup.add_extracted(
            "m",
            Aggregation.SUM,
            "s",
            minute * 60_000_000 + i,
            Extracted(value, None, {}),
            ("t", str(i)),
        )
    folded = rollup.fold()
    for cells in folded.grains:
        for cell in cells.values():
            assert usage_write._text_columns(cell) == _adapted(usage_write._columns(cell))
    text_rows = folded._rows(text=True)
    plain_rows = folded._rows(text=False)
    assert [[_adapted(r) for r in rows] for rows in plain_rows] == text_rows
    for rows, cells in zip(plain_rows, folded.grains, strict=True):
        assert [r[:4] for r in rows] == sorted(cells)


def test_combining_leaves_a_fold_whose_grains_share_cells_untouched() -> None:
    def fold(value: str, at: int, key: str) -> Folded:
        rollup = Rollup()
        rollup.add_extracted(
            "m", Aggregation.SUM, "s", at, Extracted(Decimal(value), None, {}), ("t", key)
        )
        return rollup.fold()

    first = fold("1.5", 0, "a")
    (minute,) = first.grains[0].values()
    (hour,) = first.grains[1].values()
    assert hour is minute  # a bucket of one shares its cell
    before = usage_write._columns(minute)
    both = Folded.combine([first, fold("2", 60_000_000, "b")])
    assert usage_write._columns(minute) == before
    later_first = Folded.combine([fold("3", 120_000_000, "c"), first])
    assert not later_first.minutes_in_order
    assert first.minutes_in_order
    for rows, cells in zip(later_first._rows(text=True), later_first.grains, strict=True):
        assert [r[:4] for r in rows] == sorted(cells)  # a combined fold is sorted for the upsert
    (hour_both,) = both.grains[1].values()
    assert (hour_both.count, hour_both.sum, hour_both.max) == (2, Decimal("3.5"), Decimal("2"))


# ---------------------------------------------------------------- SQLite's conflict path

_TABLE = (
    "CREATE TABLE {t} (meter_id TEXT NOT NULL, subject TEXT NOT NULL, minute BIGINT NOT NULL,"
    " group_key TEXT NOT NULL, count BIGINT NOT NULL, sum TEXT, min TEXT, max TEXT,"
    " latest_time BIGINT, latest_value TEXT, isum INTEGER,"
    " PRIMARY KEY (meter_id, subject, minute, group_key)) WITHOUT ROWID"
)
conflict_values = st.one_of(
    st.sampled_from([Decimal(t) for t in [*_EDGES, "9223372036854775808", "-9223372036854775809"]]),
    st.integers(-(2**54), 2**54).map(Decimal),
    st.integers(-5, 5).map(Decimal),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-100, max_value=100),
)


@given(st.lists(st.tuples(st.integers(0, 2), st.one_of(st.none(), conflict_values)), max_size=12))
def test_native_conflict_path_writes_what_the_udfs_write(
    upserts: list[tuple[int, Decimal | None]],
) -> None:
    """The same upserts through ``upsert_tail`` (``dec_add``/``dec_min``/``dec_max``) and
    ``sqlite_upsert_tail`` (native integer paths) leave identical rows: same values, same
    types, same text ("2.0" stays "2.0", "-0" stays "-0")."""
    conn = sqlite3.connect(":memory:")
    decimal_sql.register(conn)
    udf = usage_write.Grain("t_udf", "minute", usage_write.MINUTE_US)
    native = usage_write.Grain("t_native", "minute", usage_write.MINUTE_US)
    for grain in (udf, native):
        conn.execute(_TABLE.format(t=grain.table))
    for i, (cell, value) in enumerate(upserts):
        text = None if value is None else str(value)
        isum = None if value is None else int_sum(value)
        row = ("m", "s", cell, "{}", 1, text, text, text, i, text, isum)
        for grain, tail in ((udf, udf.upsert_tail), (native, native.sqlite_upsert_tail)):
            conn.execute(grain.upsert_head + "(?,?,?,?,?,?,?,?,?,?,?)" + tail, row)
    read = "SELECT minute, count, {c} FROM {t} ORDER BY minute"
    columns = ", ".join(f"{c}, typeof({c})" for c in ("sum", "min", "max", "latest_value", "isum"))
    assert (
        conn.execute(read.format(c=columns, t="t_native")).fetchall()
        == conn.execute(read.format(c=columns, t="t_udf")).fetchall()
    )
    conn.close()


def test_native_conflict_path_adds_integers_past_the_shadow_through_dec_add() -> None:
    conn = sqlite3.connect(":memory:")
    decimal_sql.register(conn)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, sum TEXT, isum INTEGER)")
    add = decimal_sql.add_sql("t.sum", "excluded.sum", "t.isum", "excluded.isum")
    upsert = f"INSERT INTO t VALUES (1, ?, ?) ON CONFLICT (k) DO UPDATE SET sum = {add}"
    for text, isum in (
        (str(ISUM_MAX), ISUM_MAX),
        (str(ISUM_MAX), ISUM_MAX),
        (str(10**30), None),
        ("-0", 0),
    ):
        conn.execute(upsert, (text, isum))
    assert conn.execute("SELECT sum FROM t").fetchone() == (str(10**30 + 2 * ISUM_MAX),)
    conn.close()
