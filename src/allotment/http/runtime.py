"""Glue between async request handlers and the synchronous services."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

if TYPE_CHECKING:
    from allotment.container import Container

P = ParamSpec("P")
R = TypeVar("R")


def container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


async def call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a (blocking) service call on the worker thread pool."""
    return await run_in_threadpool(fn, *args, **kwargs)
