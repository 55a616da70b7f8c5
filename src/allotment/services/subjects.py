"""subjects service (placeholder, to be implemented)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allotment.container import Container


class SubjectService:
    def __init__(self, container: Container) -> None:
        self._c = container
