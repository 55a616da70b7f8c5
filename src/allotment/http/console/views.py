"""Shared view helpers of the console pages: paging and query-parameter parsing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from allotment.http.console.render import ConsoleProblem

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
