"""Fixtures of the SDK compatibility tests: Node and the pinned @openmeter/sdk must be present."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.compat.sdk import ensure_sdk_installed, node_binary
from tests.support import ServerProcess


@pytest.fixture(scope="session")
def sdk() -> None:
    """Node.js and ``@openmeter/sdk@1.0.0-beta.185`` (``npm ci`` on first use)."""
    if node_binary() is None:
        pytest.skip("node not found: the SDK compatibility tests need Node.js >= 18.17")
    ensure_sdk_installed()


@pytest.fixture
def clock_server(
    sdk: None, make_server: Callable[..., ServerProcess]
) -> Callable[[str], ServerProcess]:
    """A server of its own (fresh database, example config) with a test clock set to ``start``."""

    def make(start: str) -> ServerProcess:
        return make_server(env={"ALLOTMENT_TEST_CLOCK": start})

    return make
