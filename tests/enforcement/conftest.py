"""Fixtures of the enforcement tests: a migrated database per test on each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from allotment.storage import migrate
from allotment.storage.database import Database, open_database


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    migrate.migrate(database, 0)
    yield database
    database.close()
