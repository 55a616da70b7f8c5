"""Processes the harness runs: the project's server, the reference app, a durable PostgreSQL
cluster, and a sampler of a process's resident memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support import ServerProcess, _pg_bindir, free_port

ROOT = Path(__file__).resolve().parent.parent


class RssSampler:
    """Samples VmRSS of a process (and its children) from /proc every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.last_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_kib(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> None:
        kib = self.rss_kib(self.pid)
        self.last_kib = kib
        self.max_kib = max(self.max_kib, kib)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class Server:
    """The project's ``allotment serve`` (tests.support.ServerProcess) with an RSS sampler."""

    def __init__(
        self, db_url: str, config: Path, clock: str, extra_args: list[str] | None = None
    ) -> None:
        self.proc = ServerProcess(
            db_url, config=config, env={"ALLOTMENT_TEST_CLOCK": clock}, extra_args=extra_args
        )
        self.rss: RssSampler | None = None

    def __enter__(self) -> Server:
        self.proc.start(timeout=600)
        assert self.proc.proc is not None
        self.rss = RssSampler(self.proc.proc.pid).start()
        return self

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.rss is not None:
            self.rss.stop()
        self.proc.stop()


class RefApp:
    """``python -m bench.refapp``: the floor and naive endpoints (see bench/refapp.py)."""

    def __init__(self, db_url: str | None = None, ingest_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "bench.refapp", "--port", str(self.port)]
        if db_url:
            args += ["--db", db_url]
        if ingest_url:
            args += ["--ingest-db", ingest_url]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="bench-refapp-", suffix=".log")[1])

    def __enter__(self) -> RefApp:
        import httpx

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT)
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"refapp exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("refapp did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DurablePostgres:
    """A PostgreSQL cluster for the benchmark: fsync and synchronous_commit ON (durable, unlike
    the test suite's throwaway cluster), data kept under ``base`` so generated databases are
    reused by the next run. Runs as the ``postgres`` user when the harness runs as root."""

    def __init__(self, base: Path, shared_buffers: str = "2GB") -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb) not found: install postgresql "
                "or pass --pg-url, or use --backends sqlite"
            )
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.shared_buffers = shared_buffers
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, cwd=str(self.base))

    def start(self) -> DurablePostgres:
        self.base.mkdir(parents=True, exist_ok=True)
        for p in [self.base, *self.base.parents]:
            if p == Path("/"):
                break
            try:
                if p.stat().st_uid == os.geteuid():
                    os.chmod(p, p.stat().st_mode | 0o111)
            except OSError:
                pass
        if self._as_user:
            shutil.chown(self.base, "postgres")
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            f"-c shared_buffers={self.shared_buffers} -c max_connections=200 "
            "-c max_wal_size=8GB -c checkpoint_timeout=30min "
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
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

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        except subprocess.CalledProcessError:
            pass

    def database(self, name: str, *, fresh: bool = False) -> tuple[str, bool]:
        """URL of database ``name`` (created if missing); and whether it already existed."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists and fresh:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                exists = None
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{name}", bool(exists)

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_admin_database(admin_url: str, name: str, *, fresh: bool = False) -> tuple[str, bool]:
    """Like :meth:`DurablePostgres.database` but on a server given by URL (--pg-url)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and fresh:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}", bool(exists)


def cpu_ns(pid: int) -> int:
    """CPU time the process's threads have run, in ns (Linux: the first field of each task's
    schedstat). A loaded machine stretches wall time; it disturbs CPU per request far less."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total
