"""Decimal helpers: exact parsing of JSON numbers and a plain wire form."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

from allotment.domain import limits
from allotment.domain.errors import InvalidInput

_ONE = Decimal(1)

EXACT = Context(prec=60)
"""The context of every sum and rendering of usage amounts outside the engine (which has its
own, also 60 digits): the default context keeps only 28 significant digits and would round."""


_PLAIN_DIGITS_MAX = 1000


def plain(value: Decimal) -> Decimal:
    """The same number without trailing zeros or exponent notation (``100``, not ``1E+2``)."""
    if value.is_zero():
        return Decimal(0)
    normalized = value.normalize(EXACT)
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        # accepted inputs keep every sum under 60 digits; a wider context still renders a
        # row stored before the bounds existed instead of failing the read
        digits = normalized.adjusted() + 1
        if digits > _PLAIN_DIGITS_MAX:
            return normalized  # exponent form: still a JSON number
        return normalized.quantize(_ONE, context=Context(prec=max(EXACT.prec, digits)))
    return normalized


def parse_amount(value: object, field: str) -> Decimal:
    """A finite JSON number (int, Decimal or numeric string) as an exact Decimal."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{field}: must be a number", field=field)
    if isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, int | Decimal):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise InvalidInput(f"{field}: {value!r} is not a number", field=field) from exc
    else:
        raise InvalidInput(f"{field}: must be a number", field=field)
    if not result.is_finite():
        raise InvalidInput(f"{field}: must be a finite number", field=field)
    return check_range(result, field)


_INT_BOUND: int = 10**limits.NUMBER_INTEGER_DIGITS_MAX
_FRACTION_EXP = -limits.NUMBER_FRACTION_DIGITS_MAX


def out_of_range(value: Decimal) -> str | None:
    """Which bound a finite ``value`` breaks (the rule, worded), or None when it is accepted:
    ``|value| < 10^NUMBER_INTEGER_DIGITS_MAX`` and at most ``NUMBER_FRACTION_DIGITS_MAX``
    digits after the point (trailing zeros not counted)."""
    if value.is_zero():
        return None
    if value.adjusted() >= limits.NUMBER_INTEGER_DIGITS_MAX:
        return (
            f"must be less than 1e{limits.NUMBER_INTEGER_DIGITS_MAX} in absolute value "
            f"(NUMBER_INTEGER_DIGITS_MAX = {limits.NUMBER_INTEGER_DIGITS_MAX} digits)"
        )
    _sign, digits, exponent = value.as_tuple()
    if isinstance(exponent, int) and exponent < _FRACTION_EXP:
        # trailing zeros do not count: 1.50000000000000000000 is 1.5
        zeros = len(digits) - len(bytes(digits).rstrip(b"\0"))
        if exponent + zeros < _FRACTION_EXP:
            return (
                f"must have at most {limits.NUMBER_FRACTION_DIGITS_MAX} digits after the point "
                f"(NUMBER_FRACTION_DIGITS_MAX)"
            )
    return None


def check_range(value: Decimal, field: str) -> Decimal:
    """``value`` when it is in the accepted range (:func:`out_of_range`), else a 400 that names
    the field, the value and the limit."""
    rule = out_of_range(value)
    if rule is not None:
        raise InvalidInput(f"{field}: {shown(value)} {rule}", field=field)
    return value


def int_in_range(value: int) -> bool:
    """Whether an integer is in the accepted range (``|value| < 10^24``)."""
    return -_INT_BOUND < value < _INT_BOUND


def shown(value: Decimal | int) -> str:
    """A number as an error detail quotes it: in full when short, else in scientific form."""
    text = str(value)
    if len(text) <= 40:
        return text
    return f"{Decimal(value):.6e}"
