"""Shared view helpers of the console pages: paging, query parameters, typed values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from allotment.http.console.render import ConsoleProblem, number

PAGE_ROWS = 50
"""At most this many rows on any console page (every list is paginated)."""
PAGE_MAX = 100_000


@dataclass(frozen=True)
class PageOf:
    number: int
    rows: int = PAGE_ROWS

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.rows

    def count(self, total: int) -> int:
        """How many pages ``total`` rows make (at least one)."""
        return max(1, -(-total // self.rows))


def page_of(params: Mapping[str, str]) -> PageOf:
    raw = params.get("page", "1") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_MAX:
        raise ConsoleProblem(400, f"page: must be a whole number from 1 to {PAGE_MAX}, got {raw!r}")
    return PageOf(int(raw))


def choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in allowed:
        raise ConsoleProblem(400, f"{name}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def text(params: Mapping[str, str], name: str, longest: int = 200) -> str:
    value = (params.get(name) or "").strip()
    if len(value) > longest:
        raise ConsoleProblem(400, f"{name}: at most {longest} characters, got {len(value)}")
    return value


def typed_value(data: Mapping[str, Any], kind: str) -> str:
    """A catalog value (``{"number": "600"}``, …) for people."""
    if kind == "NUMBER":
        raw = data.get("number")
        return "unlimited" if raw == "unlimited" else number(raw)
    if kind == "SWITCH":
        return "on" if data.get("switch") else "off"
    if kind == "ENUM":
        return ", ".join(str(v) for v in data.get("enums") or ())
    amount = data.get("amount") or {}
    return f"{number(amount.get('value'))} {amount.get('currency', '')}".strip()


def form_value(kind: str, text: str, currency: str | None) -> dict[str, Any]:
    """What an override form's one text field means for a feature of this type (the API
    validates it and says what is wrong)."""
    text = text.strip()
    if kind == "NUMBER":
        return {"number": text}
    if kind == "SWITCH":
        lowered = text.lower()
        flag: object = {"true": True, "on": True, "yes": True, "false": False, "off": False,
                        "no": False}.get(lowered, text)  # fmt: skip
        return {"switch": flag}
    if kind == "ENUM":
        return {"enums": [v.strip() for v in text.split(",") if v.strip()]}
    value, _, cur = text.partition(" ")
    amount = {"value": value} | ({"currency": cur.strip().upper()} if cur.strip() else {})
    if currency is None and "currency" not in amount:
        amount["currency"] = ""
    return {"amount": amount}


def available(usage: Decimal, balance: Decimal, overage: Decimal) -> Decimal:
    """What a metered entitlement had to spend this period: the grants used plus what is left
    (usage beyond the grants — overage — is not part of it)."""
    return balance + usage - overage


def json_number(raw: str) -> Decimal | int | str:
    """A form field meant as a JSON number: an int or a Decimal when it reads as one (sent as
    a JSON number, exactly), else the text itself (the API then says what is wrong)."""
    value = raw.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        parsed = Decimal(value)
    except ArithmeticError:
        return value
    return parsed if parsed.is_finite() else value
