"""Revocation notices between replicas: PostgreSQL ``LISTEN``/``NOTIFY``.

A revoke announces the key's id on :data:`CHANNEL` inside its transaction (PostgreSQL delivers
the notice when it commits, and never if it rolls back). Every process listens on one
connection of its own and drops the key from its lookup cache on receipt — milliseconds after
the commit. Notices are not queued for a listener that is not connected, so after every
(re)connection the listener reports ``None``: forget everything cached. While it is
disconnected the cache's time bound (``ALLOTMENT_AUTH_CACHE_SECONDS``) still holds.

A create announces its new key's id on the same channel: there is nothing to drop from a lookup
cache, but a receiver stops trusting its cached "no key exists", so the first key turns
authentication on on every replica when the notice arrives.

SQLite has no notices: one process per database file is the norm there, and the revoking
process drops its own entry; other processes on the same file rely on the time bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from allotment.storage.database import Tx

CHANNEL = "allotment_api_keys"

log = logging.getLogger("allotment.auth")


def announce(tx: Tx, key_id: str) -> None:
    """Tell every listening process, once ``tx`` commits, that ``key_id`` was revoked or
    created."""
    if tx.dialect == "postgresql":
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, key_id))


class RevocationListener:
    """A daemon thread holding one ``LISTEN`` connection; reconnects every second when lost."""

    def __init__(self, url: str, on_notice: Callable[[str | None], None]) -> None:
        self._url = url
        self._on_notice = on_notice
        self._stop = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="allotment-key-revocations", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        failing = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=5,
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                    application_name="allotment-key-revocations",
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._on_notice(None)  # whatever was revoked while not listening
                    self.listening.set()
                    if failing:
                        log.info("listening for API key revocations again")
                    failing = False
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._on_notice(notice.payload)
            except Exception as exc:  # lost or refused: retry; the cache's time bound holds
                self.listening.clear()
                if not failing:
                    log.warning(
                        "not listening for API key revocations (%s); other replicas' revokes "
                        "take effect within ALLOTMENT_AUTH_CACHE_SECONDS until reconnected",
                        exc.__class__.__name__,
                    )
                failing = True
                self._stop.wait(1.0)
        self.listening.clear()
