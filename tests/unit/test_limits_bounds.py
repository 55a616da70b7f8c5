"""The input bounds of domain/limits.py as pure rules, each at N and N+1 (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, Inexact, Rounded

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allotment.domain import json_bounds, limits
from allotment.domain.decimals import EXACT, check_range, out_of_range, parse_amount, plain
from allotment.domain.errors import InvalidInput, LimitExceeded
from allotment.domain.periods import PT1H, Recurrence, check_walk, iter_boundaries
from allotment.domain.periods import periods_spanned as spanned
from allotment.domain.timeutil import TIME_MAX, TIME_MIN, format_rfc3339, parse_rfc3339
from allotment.http.params import is_digits, parse_int

MAX_INT = 10**limits.NUMBER_INTEGER_DIGITS_MAX - 1
FRACTION = Decimal(1).scaleb(-limits.NUMBER_FRACTION_DIGITS_MAX)  # 1e-18

# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "text",
    [str(MAX_INT), str(-MAX_INT), "1e23", "0.000000000000000001", "1.500000000000000000000000",
     "0e-999999", "0e999999", "123456789012345678901234.123456789012345678", "9.99e23"],
)  # fmt: skip
def test_numbers_at_the_limit_are_accepted(text: str) -> None:
    assert out_of_range(Decimal(text)) is None
    assert parse_amount(text, "amount") == Decimal(text)


@pytest.mark.parametrize(
    ("text", "limit"),
    [(str(MAX_INT + 1), "NUMBER_INTEGER_DIGITS_MAX"), ("-1e24", "NUMBER_INTEGER_DIGITS_MAX"),
     ("1e60", "NUMBER_INTEGER_DIGITS_MAX"), ("1e400", "NUMBER_INTEGER_DIGITS_MAX"),
     ("0.0000000000000000001", "NUMBER_FRACTION_DIGITS_MAX"),
     ("1e-999999999", "NUMBER_FRACTION_DIGITS_MAX"),
     ("1.0000000000000000001", "NUMBER_FRACTION_DIGITS_MAX")],
)  # fmt: skip
def test_numbers_past_the_limit_are_refused_naming_field_value_and_limit(
    text: str, limit: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_amount(text, "amount")
    assert caught.value.field == "amount"
    assert caught.value.detail.startswith("amount: ")
    assert limit in caught.value.detail


@given(
    st.lists(
        st.decimals(
            min_value=-Decimal(MAX_INT),
            max_value=Decimal(MAX_INT),
            places=limits.NUMBER_FRACTION_DIGITS_MAX,
            allow_nan=False,
        ),
        min_size=1,
        max_size=50,
    )
)
def test_sums_of_accepted_numbers_are_exact_and_formattable(values: list[Decimal]) -> None:
    exact = Context(prec=EXACT.prec, traps=[Inexact, Rounded])  # any rounding raises
    total = Decimal(0)
    for v in values:
        total = exact.add(total, check_range(v, "v"))
    assert plain(total) == total  # renders without an error


def test_the_worst_sum_fits_the_context() -> None:
    """10^18 values of the largest magnitude with the finest fraction: 60 digits exactly."""
    worst = Decimal(MAX_INT) + FRACTION
    digits = len(EXACT.multiply(worst, Decimal(10**18)).as_tuple().digits)
    assert digits <= EXACT.prec


def test_plain_renders_rows_stored_before_the_bounds() -> None:
    assert str(plain(Decimal("1e60"))) == "1" + "0" * 60
    assert plain(Decimal("1e5000")) == Decimal("1e5000")  # exponent form, still a number


# ---------------------------------------------------------------- JSON shape


def nested(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_depth_at_the_limit_and_past_it() -> None:
    assert json_bounds.violation(nested(limits.JSON_DEPTH_MAX), 1) is None
    found = json_bounds.violation(nested(limits.JSON_DEPTH_MAX + 1), 1)
    assert found is not None
    assert found[0] == ".a" * limits.JSON_DEPTH_MAX
    assert "JSON_DEPTH_MAX" in found[1]
    deep_list: list[object] = []
    for _ in range(limits.JSON_DEPTH_MAX):
        deep_list = [deep_list]
    assert json_bounds.violation(deep_list, 1) is not None
    assert json_bounds.violation(deep_list[0], 1) is None


def test_keys_at_the_limit_and_past_it() -> None:
    keys = limits.JSON_OBJECT_KEYS_MAX
    assert json_bounds.violation({str(i): i for i in range(keys)}, 1) is None
    found = json_bounds.violation({"x": {str(i): i for i in range(keys + 1)}}, 1)
    assert found is not None
    assert found[0] == ".x"
    assert f"{keys + 1} keys" in found[1]


def test_numbers_inside_json_are_checked_by_path() -> None:
    body = {"a": [1, {"b": 10**24}]}
    with pytest.raises(InvalidInput) as caught:
        json_bounds.check_body(body)
    assert caught.value.field == "a[1].b"
    assert "1000000000000000000000000" in caught.value.detail
    assert json_bounds.violation({"f": float("inf")}, 1) is not None
    assert json_bounds.violation({"f": 1e60}, 1) is not None
    assert json_bounds.violation({"f": 0.5, "d": Decimal("1e23"), "s": "1e99"}, 1) is None


def test_the_ingest_number_hook() -> None:
    assert json_bounds.checked_decimal("0.25") == Decimal("0.25")
    assert json_bounds.checked_decimal("1.5e3") == Decimal("1500")
    for bad in ("1e24", "1e-19", "1e99999999999999999999"):
        with pytest.raises(ValueError):
            json_bounds.checked_decimal(bad)
    decoder = msgspec.json.Decoder(float_hook=json_bounds.checked_decimal)
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"a": 1e24}')


# ---------------------------------------------------------------- times


def test_time_range_edges() -> None:
    assert parse_rfc3339("1970-01-01T00:00:00Z", "t") == TIME_MIN
    last = parse_rfc3339("8999-12-31T23:59:59.999999Z", "t")
    assert last == TIME_MAX - timedelta(microseconds=1)
    for past in ("1969-12-31T23:59:59.999999Z", "9000-01-01T00:00:00Z",
                 "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                 "9999-12-31T23:59:60Z", "8999-12-31T23:59:60Z"):  # fmt: skip
        with pytest.raises(InvalidInput) as caught:
            parse_rfc3339(past, "when")
        assert caught.value.field == "when"
        assert "TIME_MIN_YEAR" in caught.value.detail
    assert parse_rfc3339("2016-12-31T23:59:60Z", "t") == datetime(2017, 1, 1, tzinfo=UTC)


def test_years_below_1000_are_padded() -> None:
    assert format_rfc3339(datetime(500, 1, 1, tzinfo=UTC)) == "0500-01-01T00:00:00Z"
    assert (
        format_rfc3339(datetime(5, 3, 4, 1, 2, 3, 400, tzinfo=UTC)) == "0005-03-04T01:02:03.0004Z"
    )


# ---------------------------------------------------------------- integers and the engine walk


def test_integers_at_the_limit_and_past_it() -> None:
    assert parse_int(str(limits.QUERY_INT_MAX), "q", "q") == limits.QUERY_INT_MAX
    assert parse_int("-5", "q", "q") == -5
    for bad in (str(limits.QUERY_INT_MAX + 1), str(2**63), "1_0", "١", "²", "+1", " 1", "1 ", ""):
        with pytest.raises(InvalidInput):
            parse_int(bad, "q", "q")
    assert is_digits("123")
    for not_digits in ("²", "١", "", "1_0"):
        assert not is_digits(not_digits)


def test_engine_walk_at_the_limit_and_past_it() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    check_walk(limits.ENGINE_PERIODS_MAX, start, start)
    with pytest.raises(LimitExceeded) as caught:
        check_walk(limits.ENGINE_PERIODS_MAX + 1, start, start)
    assert caught.value.field == "time"
    assert "ENGINE_PERIODS_MAX" in caught.value.detail
    end = start + timedelta(hours=limits.ENGINE_PERIODS_MAX - 1)
    assert spanned(PT1H, start, end) == limits.ENGINE_PERIODS_MAX
    assert len(list(iter_boundaries(Recurrence(PT1H, start), start, end))) == (
        limits.ENGINE_PERIODS_MAX
    )


@pytest.mark.parametrize(
    ("at_limit", "past"),
    [("P100Y", "P101Y"), ("P1200M", "P1201M"), ("P36525D", "P36526D"), ("P5217W", "P5218W"),
     ("PT876600H", "PT876601H"), ("P100Y", "P99999999999999999999Y")],
)  # fmt: skip
def test_intervals_at_the_limit_and_past_it(at_limit: str, past: str) -> None:
    from allotment.domain.periods import parse_interval

    parse_interval(at_limit, "usagePeriod.interval")
    with pytest.raises(InvalidInput) as caught:
        parse_interval(past, "usagePeriod.interval")
    assert caught.value.field == "usagePeriod.interval"
    assert "INTERVAL_YEARS_MAX" in caught.value.detail


@st.composite
def number_texts(draw: st.DrawFn) -> str:
    """JSON numbers as the decoder hands them to its hook: a fraction or an exponent."""
    sign = draw(st.sampled_from(["", "-"]))
    digits = st.characters(min_codepoint=ord("0"), max_codepoint=ord("9"))
    size = st.integers(limits.NUMBER_INTEGER_DIGITS_MAX - 2, limits.NUMBER_INTEGER_DIGITS_MAX + 2)
    whole = draw(
        st.one_of(
            st.just("0"),
            st.text(digits, min_size=0, max_size=3),
            size.flatmap(lambda n: st.text(digits, min_size=n, max_size=n)),
        ).map(lambda t: t.lstrip("0") or "0")
    )
    edge = limits.NUMBER_FRACTION_DIGITS_MAX
    n = draw(st.one_of(st.integers(1, edge + 3), st.sampled_from([edge, edge + 1])))
    fraction = draw(st.text(digits, min_size=n, max_size=n))
    fraction += "0" * draw(st.sampled_from([0, 0, 0, 1, 6]))
    exponent = draw(st.sampled_from(["", "", "", "e5", "E-3", "e+30", "e-40"]))
    return f"{sign}{whole}.{fraction}{exponent}"


@given(number_texts())
def test_the_ingest_hook_decides_as_out_of_range_does(text: str) -> None:
    """The hook's shortcut (digits counted in the text) never differs from the rule itself."""
    refused = out_of_range(Decimal(text)) is not None
    try:
        value = json_bounds.checked_decimal(text)
    except ValueError:
        assert refused, text
    else:
        assert not refused, text
        assert value == Decimal(text)


def test_the_ingest_hook_at_the_limit_and_past_it() -> None:
    whole, fraction = (
        "9" * limits.NUMBER_INTEGER_DIGITS_MAX,
        "9" * limits.NUMBER_FRACTION_DIGITS_MAX,
    )
    for at in (f"{whole}.{fraction}", f"-{whole}.{fraction}", f"{whole}.{fraction}000", "0.5"):
        assert json_bounds.checked_decimal(at) == Decimal(at)
    for past in (f"1{whole}.0", f"-1{whole}.0", f"0.{fraction}1", f"0.{fraction}10"):
        with pytest.raises(ValueError, match="NUMBER_"):
            json_bounds.checked_decimal(past)
