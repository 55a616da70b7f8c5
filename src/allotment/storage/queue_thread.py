"""Daemon threads (one, or ``threads``) that drain a queue, started by the first item put
on it.

The writers that group many callers' work into one transaction (``services/group_commit.py``
for ingest, ``storage/tx_batcher.py`` for authorize's writes) share this: :meth:`put` starts
the threads once, under a lock; :meth:`close` takes the threads back, queues one ``None`` per
thread (the stop sentinel a drain loop ends on, after what was queued before it) and joins.
Several threads on one queue must coordinate their reads themselves (``GroupCommitter``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueThread(Generic[T]):
    def __init__(self, name: str, drain: Callable[[], None], *, threads: int = 1) -> None:
        """``drain`` runs in each thread: it reads :attr:`queue` until it takes ``None``."""
        self.queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._name = name
        self._drain = drain
        self._count = threads
        self._threads: list[threading.Thread] | None = None
        self._start_lock = threading.Lock()

    def put(self, item: T) -> None:
        if self._threads is None:
            self._start()
        self.queue.put(item)

    def _start(self) -> None:
        with self._start_lock:
            if self._threads is None:
                names = [self._name] + [f"{self._name}-{k}" for k in range(1, self._count)]
                threads = [threading.Thread(target=self._drain, name=n, daemon=True) for n in names]
                for thread in threads:
                    thread.start()
                self._threads = threads

    def close(self, timeout: float = 30.0) -> None:
        """Let the threads finish what is queued, then stop them."""
        with self._start_lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            for _ in threads:
                self.queue.put(None)
            for thread in threads:
                thread.join(timeout)
