"""Domain errors. They carry a stable ``code`` and never an HTTP status.

The one mapping to HTTP lives in ``allotment.http.problems``.

    DomainError
    ├── InvalidInput          bad input: a field broke a rule          (400)
    ├── NotFound              the named thing does not exist           (404)
    ├── Conflict              would clash with an existing thing       (409)
    ├── LimitExceeded         an explicit limit was passed             (400, or 413 for sizes)
    │   └── PayloadTooLarge   body or batch too large                  (413)
    ├── Unauthorized          missing or invalid credentials           (401)
    ├── Forbidden             credentials do not allow this            (403)
    ├── PreconditionFailed    the named thing is in a state that forbids this (412),
    │                         e.g. a deleted customer
    ├── PaymentRequired       a budget does not cover the request      (402)
    ├── TooManyRequests       a rate limit is reached                  (429)
    ├── Unavailable           a dependency (the database) is down      (503)
    └── InvariantViolation    our bug: an internal check failed        (500)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class DomainError(Exception):
    code = "error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extensions: dict[str, Any] = dict(extensions or {})


class InvalidInput(DomainError):
    code = "invalid_input"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class LimitExceeded(DomainError):
    code = "limit_exceeded"


class PayloadTooLarge(LimitExceeded):
    code = "payload_too_large"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class PaymentRequired(DomainError):
    code = "payment_required"


class TooManyRequests(DomainError):
    code = "too_many_requests"


class PreconditionFailed(DomainError):
    code = "precondition_failed"


class Unavailable(DomainError):
    code = "unavailable"


class InvariantViolation(DomainError):
    code = "invariant_violation"


def check(condition: bool, message: str) -> None:
    """Assert an internal invariant; unlike ``assert`` it survives ``python -O``."""
    if not condition:
        raise InvariantViolation(message)


@contextmanager
def field_named() -> Iterator[None]:
    """Make a domain rejection's detail start with the wire field it names."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field and exc.field not in exc.detail:
            raise InvalidInput(
                f"{exc.field}: {exc.detail}", field=exc.field, extensions=exc.extensions
            ) from exc
        raise
