"""``allotment events import --jobs N``: one NDJSON file imported by N worker processes.

One import process is CPU-bound on one core (decoding, validation and the writer share one
interpreter lock), so on a machine with two cores it leaves one idle. With ``--jobs N`` a plain
(not gzipped) NDJSON file is cut into N byte ranges at line boundaries (:func:`plan`) and each
range is imported by a worker process of its own — forked after the parent has migrated the
database and loaded the config, with its own container, so its own group commit and writer —
running :func:`allotment.event_import.run_import` on its range. The parent only draws ONE
progress line from the workers' counts, and sums them into ONE summary (:func:`run_jobs`).

Exactly-once holds across the workers as it does across the replicas of ``serve``: every
worker's insert skips the ``(source, id)`` already stored, whoever stored it, and the deferred
fold (``storage/usage_tail.py``) folds each stored event once whichever process folds it
(SQLite: one writer at a time, the watermark read and moved in the fold's write transaction;
PostgreSQL: the fold queue's rows locked ``FOR UPDATE``). The workers fold as any writer does
when idle or lagging, but not the tail at their close: the parent folds it once all of them
have stopped (one worker's close fold held SQLite's write lock while the other appended:
100 000 events in 4.2 s against 1.5 s for one process). On SQLite the workers' writers also
share one lock (``SqliteDatabase.share_writes``), so one waiting for the other's commit
wakes when it ends instead of sleeping in SQLite's busy handler.

Rejections are named with their true line numbers: a worker reports lines counted from its
range's start, and the parent adds the lines before that range (a count of newlines, made only
for a range whose rejections the summary names). Ctrl-C: the workers ignore SIGINT; the parent
asks them to stop, and each commits what it has read and reports, as one process would. A
worker dies with the parent (``PR_SET_PDEATHSIG`` on Linux), so a SIGKILL of the import is a
crash of all of it, and a rerun resumes it: every event already stored is a duplicate.

Gzipped input, a JSON array and standard input are read by one process (``--jobs`` has no
effect on them): their byte ranges cannot be found without reading everything first.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import IO, TYPE_CHECKING, Any

from allotment.event_import import (
    REJECTIONS_SHOWN,
    ImportResult,
    ImportSourceError,
    Progress,
    Rejection,
    Source,
    run_import,
)
from allotment.storage.sqlite_database import SqliteDatabase

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

    from allotment.config import Settings

JOB_MIN_BYTES = 8 << 20
"""Without an explicit ``--jobs``, a file is split only into parts of at least this size (a
worker's start, fork and connections, costs about what 10 000 events do)."""
TICK_S = 0.1
"""How often a worker sends its counts to the parent (the progress line)."""
_PR_SET_PDEATHSIG = 1


def default_jobs() -> int:
    """2 when this process may run on at least two cores, else 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def plan(source: Source, path: str, jobs: int, *, explicit: bool) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` of the workers: each starts after a newline; at most
    ``jobs`` (fewer for a small file unless ``explicit``, none that is empty); a single range
    (or none) means one process imports the file."""
    total = source.total
    if jobs < 2 or total is None or source.gzipped or source.is_array or path == "-":
        return []
    if not explicit:
        jobs = min(jobs, total // JOB_MIN_BYTES)
        if jobs < 2:
            return []
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, jobs):
            at = max(cuts[-1], total * k // jobs)
            if at > 0:
                f.seek(at - 1)
                f.readline()  # to just after the newline at or after ``at - 1``
                at = min(f.tell(), total)
            cuts.append(at)
    cuts.append(total)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


@dataclass
class _Job:
    span: tuple[int, int]
    process: Any
    conn: Connection
    counts: ImportResult = field(default_factory=ImportResult)
    consumed: int = 0
    result: ImportResult | None = None
    error: str | None = None


class _Parts:
    """The workers' parts as the progress line reads them (see ``event_import.Consumed``)."""

    def __init__(self, total: int, jobs: list[_Job]) -> None:
        self.total: int | None = total
        self._jobs = jobs

    def consumed(self) -> int | None:
        return sum(j.consumed for j in self._jobs)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker stops when its pipe breaks
        pass


def _worker(
    settings: Settings,
    path: str,
    span: tuple[int, int],
    batch_size: int,
    conn: Connection,
    stop: Event,
    writes: Any,
    parent: int,
) -> None:
    """One worker process: its range imported through its own container; the counts sent to
    the parent every :data:`TICK_S` and at the end (or the error that stopped it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (see the docstring)
    _die_with_parent()
    if os.getppid() != parent:  # died before the line above
        return
    from allotment.container import build_container
    from allotment.gc_tuning import tune_gc

    last = 0.0

    def tick(result: ImportResult) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= TICK_S:
            last = now
            conn.send(("tick", _counts(result), source.consumed() or 0))

    try:
        source = Source(path, span=span)
        try:
            container = build_container(settings)
            try:
                if isinstance(container.db, SqliteDatabase):
                    container.db.share_writes(writes)
                tune_gc()
                result = run_import(
                    container, source, batch_size=batch_size, tick=tick, stop=stop.is_set
                )
                conn.send(("done", result, source.consumed() or 0))
            finally:
                container.close(settle=False)  # the parent folds, once all have stopped
        finally:
            source.close()
    except BaseException as exc:  # reported, whatever it is; the parent names the range
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        try:
            conn.send(("error", detail))
        except OSError:
            pass
    finally:
        conn.close()


def _counts(r: ImportResult) -> ImportResult:
    return ImportResult(
        read=r.read, accepted=r.accepted, duplicates=r.duplicates, rejected=r.rejected
    )


def _lines_before(path: str, offset: int) -> int:
    """Newlines in the first ``offset`` bytes of the file."""
    n = 0
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            offset -= len(block)
    return n


def _renumbered(path: str, job: _Job, rejections: list[Rejection]) -> list[Rejection]:
    """A worker's rejections with their lines counted from the start of the file."""
    if job.span[0] == 0 or not rejections:
        return rejections
    before = _lines_before(path, job.span[0])
    out = []
    for r in rejections:
        assert r.position is not None
        line = before + r.position
        where = f"line {line}"
        out.append(replace(r, where=where, detail=where + r.detail[len(r.where) :], position=line))
    return out


def _receive(job: _Job) -> None:
    try:
        kind, *rest = job.conn.recv()
    except EOFError:  # the worker is gone without a word
        job.process.join()
        if job.result is None and job.error is None:
            job.error = f"the worker exited with status {job.process.exitcode}"
        job.conn.close()
        return
    if kind == "tick":
        job.counts, job.consumed = rest
    elif kind == "done":
        job.result, job.consumed = rest
        job.counts = job.result
    else:
        job.error = rest[0]


def run_jobs(
    settings: Settings,
    path: str,
    spans: list[tuple[int, int]],
    *,
    total: int,
    batch_size: int,
    progress_out: IO[str] | None = None,
) -> ImportResult:
    """Import ``path`` with one worker per span (the database migrated and the config loaded
    already, by the caller, and no thread of the caller running); the summed counts. Raises
    :class:`ImportSourceError` naming the range when a worker failed (after the others have
    committed what they read)."""
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    writes = ctx.Lock()  # SQLite: one writer of all the workers at a time, woken, not polled
    started = time.monotonic()
    cpu_started = time.process_time()
    jobs: list[_Job] = []
    for span in spans:
        recv, send = ctx.Pipe(duplex=False)
        args = (settings, path, span, batch_size, send, stop, writes, os.getpid())
        process = ctx.Process(target=_worker, args=args, daemon=True)
        process.start()
        send.close()
        jobs.append(_Job(span, process, recv))
    progress = Progress(progress_out, _Parts(total, jobs), None)
    result = ImportResult()
    live = {j.conn: j for j in jobs}
    failed: list[_Job] = []  # in the order their failures arrived
    while live:
        try:
            for conn in wait(list(live), timeout=0.2):
                job = live[conn]  # type: ignore[index]
                _receive(job)
                if job.result is not None or job.error is not None:
                    del live[job.conn]
                    job.conn.close()
                    if job.error is not None:
                        failed.append(job)
                        stop.set()  # the others commit what they read and stop
                    if job.result is None and job.process.exitcode is not None:
                        _kill(live.values())  # it may have died holding ``writes``
        except KeyboardInterrupt:
            result.interrupted = True
            stop.set()
        _sum(result, jobs)
        progress.update(result)
    result.seconds = time.monotonic() - started  # every event durable
    for job in jobs:
        job.process.join()
    _sum(result, jobs)
    result.cpu_seconds = (time.process_time() - cpu_started) + sum(
        j.result.cpu_seconds for j in jobs if j.result is not None
    )
    try:
        _fold_tail(settings)  # outside the time and CPU, as one process's close is
    except KeyboardInterrupt:  # the events are stored; the next read folds them
        result.interrupted = True
    result.interrupted = result.interrupted or any(
        j.result is not None and j.result.interrupted for j in jobs
    )
    if failed:
        j = failed[0]
        raise ImportSourceError(
            f"{path}: the worker for bytes {j.span[0]}–{j.span[1]} failed: {j.error} "
            f"({result.accepted:,} events stored meanwhile; rerun the same command to resume)"
        )
    shown: list[Rejection] = []
    for job in jobs:
        if job.result is not None and len(shown) < REJECTIONS_SHOWN:
            room = REJECTIONS_SHOWN - len(shown)
            shown += _renumbered(path, job, job.result.first_rejections[:room])
    result.first_rejections = shown
    progress.update(result, final=True)
    return result


def _fold_tail(settings: Settings) -> None:
    """Fold what the workers appended (``EventService.close``), in this process."""
    from allotment.container import build_container

    build_container(settings).close()


def _kill(jobs: Any) -> None:
    """SIGKILL the workers still running: a crash, which a rerun resumes."""
    for job in jobs:
        if job.process.is_alive():
            job.process.kill()


def _sum(result: ImportResult, jobs: list[_Job]) -> None:
    result.read = sum(j.counts.read for j in jobs)
    result.accepted = sum(j.counts.accepted for j in jobs)
    result.duplicates = sum(j.counts.duplicates for j in jobs)
    result.rejected = sum(j.counts.rejected for j in jobs)
