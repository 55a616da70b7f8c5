"""One daemon thread that drains a queue, started by the first item put on it.

The writers that group many callers' work into one transaction (``services/group_commit.py``
for ingest, ``storage/tx_batcher.py`` for authorize's writes) share this: :meth:`put` starts
the thread once, under a lock; :meth:`close` takes the thread back, queues ``None`` (the stop
sentinel the drain loop ends on, after what was queued before it) and joins.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueThread(Generic[T]):
    def __init__(self, name: str, drain: Callable[[], None]) -> None:
        """``drain`` runs in the thread: it reads :attr:`queue` until it takes ``None``."""
        self.queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._name = name
        self._drain = drain
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, item: T) -> None:
        if self._thread is None:
            self._start()
        self.queue.put(item)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._drain, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def close(self, timeout: float = 30.0) -> None:
        """Let the thread finish what is queued, then stop it."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self.queue.put(None)
            thread.join(timeout)
