"""Test support: real server processes and throwaway PostgreSQL clusters (no storage mocks)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from allotment.container import Container
    from allotment.storage.database import Database

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str = "t") -> str:
    """A unique slug-safe name, so tests sharing a server never see each other's data."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in list(f)[1:]:
                cols = line.split()
                if cols[1].rsplit(":", 1)[1] == f"{port:04X}" and cols[3] == "0A":
                    found.add(cols[9])
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in glob.glob(f"/proc/{p}/task/*/children"):
            with contextlib.suppress(OSError), open(task, encoding="ascii") as f:
                todo += [int(c) for c in f.read().split()]
    return out


def listens_on(pid: int, port: int) -> bool:
    """Whether ``pid`` (or a child of it) holds the socket listening on ``port``: a free port
    picked by one test can be taken by another worker's server before ours binds it, and that
    server's /readyz must not pass for ours. True where /proc cannot tell."""
    if not os.path.exists("/proc/net/tcp"):
        return True
    inodes = _listening_inodes(port)
    for p in _descendants(pid):
        for fd in glob.glob(f"/proc/{p}/fd/*"):
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


class ServerProcess:
    """``allotment serve`` in a child process, on its own port and database."""

    def __init__(
        self,
        db_url: str,
        *,
        config: Path | None = EXAMPLE_CONFIG,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """``command`` starts the program (default: this interpreter's ``-m allotment``; the
        installed-wheel test passes another venv's ``allotment`` script)."""
        self.db_url = db_url
        self.command = command or [sys.executable, "-m", "allotment"]
        self.config = config
        self.env = env or {}
        self.extra_args = extra_args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="allotment-server-", suffix=".log")[1])

    def start(self, timeout: float = 30.0) -> ServerProcess:
        for _attempt in range(3):
            if self._start(timeout):
                return self
            self.port = free_port()  # another process took the port first: a fresh one
            self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"server lost its port three times:\n{self.logs()}")

    def _start(self, timeout: float) -> bool:
        args = [
            *self.command,
            "serve",
            "--db",
            self.db_url,
            "--port",
            str(self.port),
        ]
        if self.config is not None:
            args += ["--config", str(self.config)]
        args += ["--log-level", "warning", *self.extra_args]
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir()
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.logs().lower():
                    return False
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                ready = httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and listens_on(self.proc.pid, self.port):
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing — a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)


# ------------------------------------------------------------------ PostgreSQL


def _pg_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1: its own port and data dir, removed on stop.

    PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
    ``postgres`` system user (created by the Debian package).
    """

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found (initdb). Install them "
                "(apt-get install postgresql) or pass --pg-url, or run with --backends=sqlite"
            )
        self.bindir = bindir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="allotment-pg-"))
        self.data = self.base / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres")
        os.chmod(self.base, 0o755)

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, cwd=str(self.base))

    def start(self) -> PostgresCluster:
        """Create the cluster (first call) and start it; later calls restart the same cluster
        (same port, same data directory) after :meth:`halt`."""
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            )
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=300 -c shared_buffers=128MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-w",
            "-l",
            str(self.base / "pg.log"),
            "start",
        )
        return self

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server but keep the cluster (``pg_ctl stop -m immediate``: an abrupt outage,
        every client connection is cut); :meth:`start` brings it back on the same port."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_pg_database(admin_url: str) -> str:
    """A fresh, empty database on the given server; returns its URL."""
    import psycopg

    name = unique("allotment_test")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def running_server(db_url: str, **kwargs: object) -> Iterator[ServerProcess]:
    server = ServerProcess(db_url, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def frozen_container(db_url: str, now: datetime) -> Iterator[Container]:
    """A started in-process container on ``db_url`` whose clock stands still at ``now``."""
    from allotment.clock import FrozenClock
    from allotment.config import Settings
    from allotment.container import Container
    from allotment.storage.database import open_database

    c = Container(Settings(db_url=db_url), open_database(db_url), FrozenClock(now))
    c.start()
    try:
        yield c
    finally:
        c.close()


def fold_tail(db: Database) -> None:
    """Fold ingest's unfolded tail (SQLite's deferred fold) before a test reads the rollup
    tables directly, as every usage read of the service does first (``EventService.settle``)."""
    from allotment.storage import usage_tail

    with db.write() as tx:
        usage_tail.fold_all(tx)
