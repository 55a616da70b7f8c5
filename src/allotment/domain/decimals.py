"""Decimal helpers: exact parsing of JSON numbers and a plain wire form."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

from allotment.domain.errors import InvalidInput

_ONE = Decimal(1)

EXACT = Context(prec=60)
"""The context of every sum and rendering of usage amounts outside the engine (which has its
own, also 60 digits): the default context keeps only 28 significant digits and would round."""


def plain(value: Decimal) -> Decimal:
    """The same number without trailing zeros or exponent notation (``100``, not ``1E+2``)."""
    if value.is_zero():
        return Decimal(0)
    normalized = value.normalize(EXACT)
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        return normalized.quantize(_ONE, context=EXACT)
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
    return result
