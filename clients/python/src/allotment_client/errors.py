"""Errors: a denial (402/403/429) is an :class:`Denied` carrying the server's problem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AllotmentError(Exception):
    """Anything the client could not do."""


class ApiError(AllotmentError):
    """The server answered with a problem (``application/problem+json``)."""

    def __init__(
        self, status: int, problem: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.problem = dict(problem)
        self.headers = dict(headers or {})
        self.code: str = str(problem.get("code", ""))
        self.detail: str = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.code}: {self.detail}")


class Denied(ApiError):
    """The request is not allowed (402, 403 or 429)."""

    @property
    def extensions(self) -> dict[str, Any]:
        ext = self.problem.get("extensions")
        return dict(ext) if isinstance(ext, dict) else {}


class NotEntitled(Denied):
    """403 NOT_ENTITLED."""


class EnumValueNotAllowed(Denied):
    """403 ENUM_VALUE_NOT_ALLOWED: ``extensions`` name the plan and the plans including it."""


class SwitchOff(Denied):
    """403 SWITCH_OFF."""


class BudgetExhausted(Denied):
    """402 BUDGET_EXHAUSTED."""


class RateLimited(Denied):
    """429 RATE_LIMITED; :attr:`retry_after` is the server's wait in seconds."""

    @property
    def retry_after(self) -> float:
        exact = self.extensions.get("retry_after_ms")
        if isinstance(exact, int):
            return exact / 1000
        return float(self.headers.get("retry-after", "1"))


_BY_CODE: dict[str, type[Denied]] = {
    "NOT_ENTITLED": NotEntitled,
    "ENUM_VALUE_NOT_ALLOWED": EnumValueNotAllowed,
    "SWITCH_OFF": SwitchOff,
    "BUDGET_EXHAUSTED": BudgetExhausted,
    "RATE_LIMITED": RateLimited,
}


def error_for(status: int, problem: Mapping[str, Any], headers: Mapping[str, str]) -> ApiError:
    cls = _BY_CODE.get(str(problem.get("code", "")))
    if cls is not None:
        return cls(status, problem, headers)
    if status in (402, 403, 429):
        return Denied(status, problem, headers)
    return ApiError(status, problem, headers)
