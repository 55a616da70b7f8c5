"""One ``allotment serve`` per SQLite file.

An SQLite deployment is one server process: its decisions are exact because the keys they
lock are in-process locks, and the decision state it keeps in memory
(:mod:`allotment.storage.enforcement_memory`) is exact only while it is the one writer of that
state. A second server on the same file would break both without a sign, so ``serve`` takes an
exclusive ``flock`` on ``<file>-serve.lock`` before it migrates or listens, and a second one
stops with an error naming the first one's pid. The kernel drops the lock when the process
ends, however it ends (SIGKILL included): a restart never finds a stale lock. Other commands
(``events import``, ``migrate``, ``api-keys``) take no lock: they write through SQLite's own
locking and nothing of theirs is kept in a server's memory.
"""

from __future__ import annotations

import os


class ServeLockHeld(Exception):
    """Another live process serves this SQLite file."""

    def __init__(self, lock_path: str, holder: str) -> None:
        self.lock_path = lock_path
        self.holder = holder
        super().__init__(
            f"another `allotment serve` (pid {holder or 'unknown'}) serves this SQLite file"
            f" (lock {lock_path}); SQLite takes one server process: stop it, or run replicas"
            " on PostgreSQL (docs/operations.md)"
        )


def lock_path_of(db_path: str) -> str:
    return f"{db_path}-serve.lock"


def hold_serve_lock(db_path: str) -> int | None:
    """Take the file's serve lock for this process's lifetime; the open descriptor (closed on
    exec, released by the kernel at exit), or ``None`` for an in-memory database or a system
    without ``flock``. Raises :class:`ServeLockHeld` when another process holds it."""
    if db_path == ":memory:":
        return None
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing to hold
        return None
    path = lock_path_of(db_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ServeLockHeld(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
