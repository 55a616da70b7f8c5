"""Shared fixtures. Every test that takes ``backend`` (directly or through ``db_url``,
``server`` or ``client``) runs once per backend: SQLite and PostgreSQL, both real.

Options:
  --backends=sqlite,postgres   which backends to run (default: both; CI runs both)
  --pg-url=postgresql://…      use an existing PostgreSQL server (needs CREATEDB) instead of
                               starting a throwaway cluster
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

from allotment.storage import migrate
from allotment.storage.database import Database, open_database
from tests.support import PostgresCluster, ServerProcess, create_pg_database

hypothesis_settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, print_blob=True
)
hypothesis_settings.register_profile("dev", max_examples=100, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends", default=os.environ.get("ALLOTMENT_TEST_BACKENDS", "sqlite,postgres")
    )
    parser.addoption("--pg-url", default=os.environ.get("ALLOTMENT_TEST_PG_URL"))


def _backends(config: pytest.Config) -> list[str]:
    names = [b.strip() for b in str(config.getoption("--backends")).split(",") if b.strip()]
    unknown = set(names) - {"sqlite", "postgres"}
    if unknown:
        raise pytest.UsageError(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def pg_admin_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An admin URL of a PostgreSQL server: --pg-url, or a throwaway cluster for this session."""
    given = request.config.getoption("--pg-url")
    if given:
        yield str(given)
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def new_db_url(request: pytest.FixtureRequest, backend: str) -> Callable[[], str]:
    """A factory of fresh, empty databases on the current backend."""
    tmp = Path(tempfile.mkdtemp(prefix="allotment-test-"))
    counter = iter(range(1_000_000))

    def make() -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp / f'db{next(counter)}.sqlite'}"
        admin: str = request.getfixturevalue("pg_admin_url")
        return create_pg_database(admin)

    return make


@pytest.fixture
def db_url(new_db_url: Callable[[], str]) -> str:
    return new_db_url()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh database on the current backend, migrated (at time 0), closed after the test."""
    database = open_database(db_url)
    migrate.migrate(database, 0)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture(scope="session")
def server(new_db_url: Callable[[], str]) -> Iterator[ServerProcess]:
    """One real server per backend per session (example config, system clock).

    Tests share it, so each test names its own meters/subjects/features with ``unique()``.
    """
    proc = ServerProcess(new_db_url()).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def make_server(new_db_url: Callable[[], str]) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers (own database unless ``db_url`` is given); all stopped afterwards."""
    started: list[ServerProcess] = []

    def make(db_url: str | None = None, **kwargs: object) -> ServerProcess:
        proc = ServerProcess(db_url or new_db_url(), **kwargs).start()  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
