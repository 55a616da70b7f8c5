"""The migration chain: numbered SQL files, applied once each, in order, on both engines.

A file ``NNNN_name.sql`` runs on every engine; ``NNNN_name.sqlite.sql`` and
``NNNN_name.postgresql.sql`` are the two halves of one engine-specific step (same version).
Applied versions are recorded in ``schema_migrations``. Never edit a released migration:
add a new one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from allotment.storage.database import Database, Tx, split_statements

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(sqlite|postgresql))?\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    script: str


def available(dialect: str) -> list[Migration]:
    return list(_available(dialect))


@functools.lru_cache(maxsize=4)
def _available(dialect: str) -> tuple[Migration, ...]:
    found: dict[str, Migration] = {}
    folder = resources.files("allotment.storage") / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        m = _NAME.match(entry.name)
        if m is None:
            continue
        version, name, only = m.groups()
        if only is not None and only != dialect:
            continue
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return tuple(found[v] for v in sorted(found))


def _ensure_table(db: Database) -> None:
    with db.write() as tx:
        if db.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(724301)")
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
        )


def applied(db: Database) -> set[str]:
    _ensure_table(db)
    with db.read() as tx:
        return {row[0] for row in tx.execute("SELECT version FROM schema_migrations")}


def pending(db: Database) -> list[Migration]:
    done = applied(db)
    return [m for m in available(db.dialect) if m.version not in done]


def migrate(db: Database, now_us: int) -> list[Migration]:
    """Apply every pending migration; return what was applied.

    Each step runs in one transaction that first takes the engine's migration lock (an
    advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), then re-checks whether another
    process applied it meanwhile, so replicas starting together are safe.
    """
    _ensure_table(db)
    ran = []
    for migration in available(db.dialect):
        with db.write() as tx:
            if db.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(724301)")
            if tx.one("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
                continue
            for statement in split_statements(migration.script):
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now_us),
            )
        ran.append(migration)
    return ran


def _table_exists(db: Database, tx: Tx) -> bool:
    if db.dialect == "postgresql":
        return tx.one("SELECT to_regclass('schema_migrations') IS NOT NULL") == (True,)
    found = tx.one(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    )
    return found is not None


def is_current(db: Database) -> bool:
    """Whether every known migration is applied: one read, no lock, no DDL (for /readyz).

    A database *ahead* of this build (a newer replica migrated it) counts as current as long as
    everything this build knows is applied, so a rolling upgrade keeps old replicas ready.
    """
    wanted = {m.version for m in available(db.dialect)}
    with db.read() as tx:
        if not _table_exists(db, tx):
            return not wanted
        done = {row[0] for row in tx.execute("SELECT version FROM schema_migrations")}
    return wanted <= done
