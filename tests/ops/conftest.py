"""Fixtures for the operations tests (outages, crashes, replicas, concurrency)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import PostgresCluster, create_pg_database


def _wants_postgres(config: pytest.Config) -> bool:
    names = {b.strip() for b in str(config.getoption("--backends")).split(",")}
    return "postgres" in names


@pytest.fixture
def own_pg_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A private throwaway cluster this test may stop and restart (never a --pg-url server)."""
    if not _wants_postgres(request.config):
        pytest.skip("PostgreSQL deselected with --backends")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's PostgreSQL (for PostgreSQL-only tests: several
    server processes on one database). Not parametrised by ``backend``, so nothing is skipped
    on SQLite: these tests simply are not SQLite tests."""
    if not _wants_postgres(request.config):
        pytest.skip("PostgreSQL deselected with --backends")
    admin: str = request.getfixturevalue("pg_admin_url")
    return create_pg_database(admin)
