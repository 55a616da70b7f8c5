"""``allotment events import``: a real CLI process against a real database, read back through a
real server. Same validation and exactly-once rules as ``POST /api/v1/events``; NDJSON and JSON
arrays, gzipped or not, from a file or stdin; resumable after SIGKILL (the rerun counts
nothing twice); beside a running server that keeps ingesting, whose next reads (value check,
history, meter query, its value cache warm) count both."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops.helpers import meter_total
from tests.support import EXAMPLE_CONFIG, ServerProcess, unique


def prompt(who: str, i: int, tokens: int, **over: Any) -> dict[str, Any]:
    subject = who
    e: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{subject}-{i}",
        "source": "import-test",
        "type": "prompt",
        "subject": subject,
        "time": f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        "data": {"tokens": tokens, "model": "m", "type": "in"},
    }
    e.update(over)
    return e


def run_import(
    db_url: str, *args: str, stdin: bytes | None = None, timeout: float = 300
) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "allotment",
            "events",
            "import",
            *args,
            "--db",
            db_url,
            "--config",
            str(EXAMPLE_CONFIG),
            "--json",
        ],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out.strip().splitlines()[-1]), proc.stderr.decode()


BAD: list[tuple[dict[str, Any] | bytes, str | None, str]] = [
    # (event or raw line, field the import names, what the rule says)
    ({"subject": ""}, "subject", "must be a non-empty string"),
    ({"time": "yesterday"}, "time", "is not an RFC 3339 date-time"),
    ({"specversion": "0.3"}, "specversion", 'must be "1.0"'),
    ({"data": [1]}, "data", "must be a JSON object or null"),
    (b"not json", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
]


def _lines(subject: str) -> tuple[list[bytes], Decimal, list[tuple[int, str | None, str]]]:
    """NDJSON lines: 20 valid events (one repeated: a duplicate), the BAD ones spread in, and a
    blank line; the expected token total and (line number, field, rule) of each rejection."""
    lines: list[bytes] = []
    expected: list[tuple[int, str | None, str]] = []
    total = Decimal(0)
    bad = iter(BAD)
    for i in range(20):
        lines.append(json.dumps(prompt(subject, i, i + 1)).encode())
        total += i + 1
        if i % 3 == 1:
            item = next(bad, None)
            if item is not None:
                raw, field, rule = item
                line = (
                    raw
                    if isinstance(raw, bytes)
                    else json.dumps(prompt(subject, 100 + i, 5, **raw)).encode()
                )
                lines.append(line)
                expected.append((len(lines), field, rule))
    lines.insert(5, b"")
    expected = [(n + 1 if n > 5 else n, f, r) for n, f, r in expected]
    lines.append(json.dumps(prompt(subject, 3, 4)).encode())  # a repeat of event 3: duplicate
    return lines, total, expected


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_ndjson_import_counts_names_rejections_and_reruns_as_duplicates(
    db_url: str, make_server: Callable[..., ServerProcess], tmp_path: Path, jobs: int
) -> None:
    """With ``--jobs`` 2 or 3 the file is cut into ranges imported by worker processes: the same
    counts, the rejections named by their lines in the whole file, one progress line."""
    subject = unique("imp")
    lines, total, expected = _lines(subject)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")

    rc, res, err = run_import(db_url, str(path), "--jobs", str(jobs))
    assert rc == 1, err  # some rejected
    assert (res["read"], res["accepted"], res["duplicates"], res["rejected"]) == (
        20 + len(BAD) + 1,
        20,
        1,
        len(BAD),
    )
    got = [(r["where"], r["field"]) for r in res["firstRejections"]]
    assert got == [(f"line {n}", f) for n, f, _ in expected]
    for r, (_, _, rule) in zip(res["firstRejections"], expected, strict=True):
        assert rule in r["detail"], r
    assert "ev/s" in err  # the final progress line

    # the same file again, gzipped, from stdin: nothing counts twice
    rc2, res2, _ = run_import(db_url, "-", stdin=gzip.compress(path.read_bytes()))
    assert rc2 == 1
    assert (res2["accepted"], res2["duplicates"], res2["rejected"]) == (0, 21, len(BAD))

    srv = make_server(db_url=db_url)
    with httpx.Client(base_url=srv.url, timeout=30.0) as c:
        assert meter_total(c, "tokens_total", subject) == total
        # the route refuses each rejected event with the same rule on the same field
        for raw, field, rule in BAD:
            body = raw if isinstance(raw, bytes) else json.dumps(prompt(subject, 999, 1, **raw))
            r = c.post(
                "/api/v1/events",
                content=body,
                headers={"content-type": "application/cloudevents+json"},
            )
            assert r.status_code == 400, r.text
            if field is not None:
                assert r.json()["detail"].startswith(f"event.{field}: "), r.text
                assert rule in r.json()["detail"]


def test_json_array_gzipped_file_and_exit_status_zero(
    db_url: str, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    subject = unique("arr")
    events = [prompt(subject, i, 10) for i in range(250)]
    events[7]["time"] = None  # no time: server time, as over HTTP
    path = tmp_path / "events.json.gz"
    path.write_bytes(gzip.compress(json.dumps(events, indent=1).encode()))
    rc, res, err = run_import(db_url, str(path), "--batch-size", "100")
    assert rc == 0, err
    assert (res["read"], res["accepted"], res["duplicates"], res["rejected"]) == (250, 250, 0, 0)
    bad = [*events[:3], prompt(subject, 900, 1, subject="")]
    plain = tmp_path / "bad.json"
    plain.write_text(json.dumps(bad))
    rc, res, _ = run_import(db_url, str(plain))
    assert rc == 1
    assert (res["accepted"], res["duplicates"], res["rejected"]) == (0, 3, 1)
    assert res["firstRejections"][0]["where"] == "events[3]"
    assert res["firstRejections"][0]["field"] == "subject"
    srv = make_server(db_url=db_url)
    with httpx.Client(base_url=srv.url, timeout=30.0) as c:
        assert meter_total(c, "tokens_total", subject) == 2500


def test_unreadable_input_is_exit_2(db_url: str, tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "allotment", "events", "import", str(tmp_path / "nope.ndjson")],
        capture_output=True,
        text=True,
        env={**os.environ, "ALLOTMENT_DB_URL": db_url},
    )
    assert missing.returncode == 2
    assert "nope.ndjson" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('[{"a": 1}, ')
    proc = subprocess.run(
        [sys.executable, "-m", "allotment", "events", "import", str(broken), "--db", db_url],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "not a JSON array of CloudEvents" in proc.stderr
    zero = subprocess.run(
        [sys.executable, "-m", "allotment", "events", "import", str(broken), "--jobs", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "ALLOTMENT_DB_URL": db_url},
    )
    assert zero.returncode == 2
    assert "--jobs: must be at least 1" in zero.stderr


def _stored(db_url: str, source: str) -> int:
    if db_url.startswith("sqlite"):
        path = db_url[len("sqlite:///") :]
        if not Path(path).exists():
            return 0
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            try:
                row = conn.execute("SELECT count(*) FROM events WHERE source = ?", (source,))
                return int(row.fetchone()[0])
            except sqlite3.OperationalError:  # not migrated yet
                return 0
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM events WHERE source = %s", (source,))
            return int(row.fetchone()[0])  # type: ignore[index]
        except psycopg.errors.UndefinedTable:
            return 0


def _big_file(tmp_path: Path, subject: str, source: str, n: int) -> tuple[Path, int]:
    path = tmp_path / "big.ndjson"
    with path.open("wb") as f:
        for i in range(n):
            f.write(json.dumps(prompt(subject, i, 1 + i % 7, source=source)).encode() + b"\n")
    return path, sum(1 + i % 7 for i in range(n))


def _wait_stored(db_url: str, source: str, proc: subprocess.Popen[bytes], least: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _stored(db_url, source) >= least:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the import finished before it could be stopped"


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_sigkill_midway_then_rerun_counts_everything_exactly_once(
    db_url: str, make_server: Callable[..., ServerProcess], tmp_path: Path, jobs: int
) -> None:
    """SIGKILL of the import (with ``--jobs 2`` its workers die with it): the rerun, with the
    default jobs, stores the rest and counts nothing twice, in the rows and the rollups."""
    subject = unique("kill")
    n = 60_000
    source = f"kill-{subject}"
    path, expected = _big_file(tmp_path, subject, source, n)
    args = [sys.executable, "-m", "allotment", "events", "import", str(path), "--db", db_url]
    args += ["--config", str(EXAMPLE_CONFIG), "--batch-size", "500", "--no-progress"]
    args += ["--jobs", str(jobs)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_stored(db_url, source, proc, 2_000)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    after_kill = _stored(db_url, source)
    assert 2_000 <= after_kill < n, after_kill
    time.sleep(0.5)  # no worker outlives the import
    assert _stored(db_url, source) == after_kill

    rc, res, err = run_import(db_url, str(path), "--no-progress")
    assert rc == 0, err
    assert res["read"] == n
    assert res["accepted"] == n - after_kill
    assert res["duplicates"] == after_kill
    assert _stored(db_url, source) == n
    srv = make_server(db_url=db_url)
    with httpx.Client(base_url=srv.url, timeout=60.0) as c:
        assert meter_total(c, "tokens_total", subject) == expected


def test_workers_folding_beside_each_other_count_every_event_once(
    db_url: str, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Three workers with ``ALLOTMENT_FOLD_MAX_LAG=0``: each folds after each of its commits,
    beside the others' appends and folds (SQLite: the watermark; PostgreSQL: the fold queue),
    and every event counts once in the rollups."""
    subject = unique("fold")
    n = 30_000
    source = f"fold-{subject}"
    path, expected = _big_file(tmp_path, subject, source, n)
    args = [sys.executable, "-m", "allotment", "events", "import", str(path), "--db", db_url]
    args += ["--config", str(EXAMPLE_CONFIG), "--jobs", "3", "--no-progress", "--json"]
    proc = subprocess.run(
        args,
        capture_output=True,
        timeout=300,
        env={**os.environ, "ALLOTMENT_FOLD_MAX_LAG": "0"},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    res = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert (res["read"], res["accepted"], res["duplicates"]) == (n, n, 0)
    assert _stored(db_url, source) == n
    srv = make_server(db_url=db_url)
    with httpx.Client(base_url=srv.url, timeout=60.0) as c:
        assert meter_total(c, "tokens_total", subject) == expected


def _wait_workers(proc: subprocess.Popen[bytes], n: int) -> None:
    """Until ``proc`` has ``n`` children (the import's workers: they are reading)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(children.read_text().split()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError("the workers did not start")


@pytest.mark.slow
def test_ctrl_c_with_jobs_commits_what_was_read_and_reports_it(
    db_url: str, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """SIGINT to the whole process group (what Ctrl-C sends) of an import with two workers:
    exit 130 with the counts of what was stored, which the rerun finds as duplicates."""
    subject = unique("int")
    n = 200_000
    source = f"int-{subject}"
    path, expected = _big_file(tmp_path, subject, source, n)
    args = [sys.executable, "-m", "allotment", "events", "import", str(path), "--db", db_url]
    args += ["--config", str(EXAMPLE_CONFIG), "--batch-size", "500", "--no-progress"]
    args += ["--jobs", "2", "--json"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _wait_workers(proc, 2)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res["interrupted"] is True
    stored = _stored(db_url, source)
    assert res["accepted"] == stored < n
    assert res["read"] >= stored
    assert "rerun the same command" not in out.decode()  # --json: the object only

    rc, res2, err2 = run_import(db_url, str(path), "--no-progress")
    assert rc == 0, err2
    assert (res2["accepted"], res2["duplicates"]) == (n - stored, stored)
    srv = make_server(db_url=db_url)
    with httpx.Client(base_url=srv.url, timeout=60.0) as c:
        assert meter_total(c, "tokens_total", subject) == expected


def test_import_beside_a_running_server_is_seen_by_its_next_reads(
    db_url: str, make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    from tests.ops.test_read_your_writes import NOW, _event, _reads, _setup

    srv = make_server(db_url=db_url, env={"ALLOTMENT_TEST_CLOCK": NOW})
    slug, subject = unique("imp"), unique("s")
    with srv.client() as c:
        base = _setup(c, slug, subject)
        warm = _reads(c, slug, subject, base)  # the server's value cache holds a value now
        assert warm == (0, 0, 0)
        events = [_event(slug, subject, f"f-{i}", i % 720, Decimal(i) / 4) for i in range(3_000)]
        path = tmp_path / "beside.ndjson"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        args = [sys.executable, "-m", "allotment", "events", "import", str(path), "--db", db_url]
        args += ["--config", str(EXAMPLE_CONFIG), "--batch-size", "200", "--no-progress", "--json"]
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        live = 0
        while proc.poll() is None or live < 20:  # the server ingests meanwhile, same meter
            e = _event(slug, subject, f"h-{live}", 700, Decimal(1))
            r = c.post(
                "/api/v1/events",
                content=json.dumps(e),
                headers={"content-type": "application/cloudevents+json"},
            )
            assert r.status_code == 204, r.text
            live += 1
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["accepted"] == 3_000
        total = sum((Decimal(i) / 4 for i in range(3_000)), Decimal(0)) + live
        assert _reads(c, slug, subject, base) == (total, total, total)
