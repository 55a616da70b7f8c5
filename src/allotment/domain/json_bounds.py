"""The bounds of a decoded JSON value: nesting depth, keys per object, numbers in range.

One rule for every JSON request body and every event's ``data`` (docs/limits.md):
``limits.JSON_DEPTH_MAX`` levels of arrays and objects counted from the body's top level,
``limits.JSON_OBJECT_KEYS_MAX`` keys per object, and every number in the accepted range
(:func:`allotment.domain.decimals.out_of_range`). A value within them can be stored, encoded
again and summed without an error; the first violation is named by its path.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from allotment.domain import limits
from allotment.domain.decimals import int_in_range, out_of_range, shown
from allotment.domain.errors import InvalidInput

Violation = tuple[str, str]
"""``(path below the checked value, e.g. ".a[3]", the rule broken, worded)``."""

_INT_BOUND = 10**limits.NUMBER_INTEGER_DIGITS_MAX
_WHOLE_DIGITS_MAX = limits.NUMBER_INTEGER_DIGITS_MAX
_FRACTION_DIGITS_MAX = limits.NUMBER_FRACTION_DIGITS_MAX

_DEPTH_RULE = f"nested deeper than {limits.JSON_DEPTH_MAX} levels (JSON_DEPTH_MAX)"


def violation(value: Any, depth: int, *, decimals_checked: bool = False) -> Violation | None:
    """The first bound ``value`` breaks, or None. ``depth`` is the level ``value`` sits at
    (the body's top level is 1). ``decimals_checked``: every ``Decimal`` in ``value`` was
    already checked (the ingest decoder's number hook does), so only the other kinds are."""
    kind = value.__class__
    if kind is dict:
        if depth > limits.JSON_DEPTH_MAX:
            return "", _DEPTH_RULE
        if len(value) > limits.JSON_OBJECT_KEYS_MAX:
            return "", (
                f"has {len(value)} keys, more than {limits.JSON_OBJECT_KEYS_MAX} "
                "(JSON_OBJECT_KEYS_MAX)"
            )
        for key, item in value.items():
            inner = item.__class__
            if inner is str or inner is bool or item is None:
                continue
            if inner is int and -_INT_BOUND < item < _INT_BOUND:
                continue  # the common number, judged here rather than in a call
            if inner is Decimal and decimals_checked:
                continue
            found = violation(item, depth + 1, decimals_checked=decimals_checked)
            if found is not None:
                return f".{key}{found[0]}", found[1]
        return None
    if kind is list:
        if depth > limits.JSON_DEPTH_MAX:
            return "", _DEPTH_RULE
        for index, item in enumerate(value):
            found = violation(item, depth + 1, decimals_checked=decimals_checked)
            if found is not None:
                return f"[{index}]{found[0]}", found[1]
        return None
    if kind is int:
        if int_in_range(value):
            return None
        return "", f"{shown(value)} {out_of_range(Decimal(value))}"
    if kind is Decimal:
        if decimals_checked:
            return None
        if not value.is_finite():
            return "", f"{value} is not a finite number"
        rule = out_of_range(value)
        return None if rule is None else ("", f"{shown(value)} {rule}")
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            return "", f"{value} is not a finite number"
        return violation(Decimal(repr(value)), depth)
    return None


def check(value: Any, field: str, depth: int = 1) -> Any:
    """``value`` when it is within the bounds, else a 400 naming the path and the rule."""
    found = violation(value, depth)
    if found is not None:
        where = f"{field}{found[0]}"
        raise InvalidInput(f"{where}: {found[1]}", field=where)
    return value


def check_body(payload: Any) -> Any:
    """A decoded request body when it is within the bounds; the 400 names the member by its
    path from the top (``amount``, ``metadata.k``, ``[3].key``), or ``body`` itself."""
    found = violation(payload, 1)
    if found is not None:
        path = found[0]
        where = path[1:] if path.startswith(".") else f"body{path}"
        raise InvalidInput(f"{where}: {found[1]}", field=where)
    return payload


def exact_decimal(text: str) -> Decimal:
    """A decoder's number hook: a JSON number with a fraction or exponent as an exact
    ``Decimal`` (``ValueError`` for an exponent too large for any ``Decimal``: msgspec then
    reports a validation error at its path, a 400)."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text[:40]} is far outside any accepted number") from None


def checked_decimal(text: str) -> Decimal:
    """The ingest decoder's number hook: a JSON number with a fraction or exponent as an exact
    ``Decimal``, refused (``ValueError``) when out of range. Without an exponent the text
    itself says it is in range: JSON writes no leading zeros (but a lone ``0``), so the digits
    before the point are the point's position (less a sign), and at most 18 after it are in
    range whatever they are. Only an exponent form, or more digits than that (trailing zeros
    do not count: :func:`out_of_range` decides, and words the rule), takes the slow route."""
    if "e" not in text and "E" not in text:
        point = text.find(".")
        if len(text) - point <= _FRACTION_DIGITS_MAX + 1 and point <= _WHOLE_DIGITS_MAX + (
            text[0] == "-"
        ):
            return Decimal(text)
    number = exact_decimal(text)
    rule = out_of_range(number)
    if rule is not None:
        raise ValueError(f"{shown(number)} {rule}")
    return number


def too_deep(field: str = "body") -> InvalidInput:
    """The 400 for a body the decoder itself could not descend (far past the depth bound)."""
    return InvalidInput(f"{field}: {_DEPTH_RULE}", field=field)
