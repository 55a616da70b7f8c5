"""The client's tests run against a real server process (the repository's fixtures: one
server per backend, throwaway PostgreSQL). Run from the repository root:
``python -m pytest clients/python/tests``."""

from __future__ import annotations

from tests.conftest import (  # noqa: F401 - fixtures and hooks re-exported for these tests
    client,
    make_server,
    new_db_url,
    pg_admin_url,
    pytest_addoption,
    pytest_generate_tests,
    server,
)
