"""The import's input reader and progress line (no database): format and gzip detection,
positions as the summary names them, events/s and ETA when the size is known."""

from __future__ import annotations

import gzip
import io
import itertools
from pathlib import Path

import pytest

from allotment.event_import import ImportResult, ImportSourceError, Progress, Source
from allotment.import_jobs import JOB_MIN_BYTES, plan

NDJSON = b'{"id":"a"}\n\n  {"id":"b"}  \n{"id":"c"}'
ARRAY = b' \n[{"id":"a"},\n {"id":"b"}]'


@pytest.mark.parametrize("compress", [False, True])
def test_ndjson_lines_are_numbered_blank_lines_skipped(compress: bool) -> None:
    data = gzip.compress(NDJSON) if compress else NDJSON
    src = Source("-", stdin=io.BytesIO(data))
    assert not src.is_array
    assert list(src.items()) == [
        ("line 1", b'{"id":"a"}'),
        ("line 3", b'{"id":"b"}'),
        ("line 4", b'{"id":"c"}'),
    ]


@pytest.mark.parametrize("blank", [None, 5, 20_000])
def test_line_numbers_run_on_across_read_blocks_and_chunks(blank: int | None) -> None:
    """30 000 lines (about 1.3 MiB: more than one read block), chunks of 1 000: every event
    keeps its own line number, with no blank line (positions taken as a range) and with one
    in the first or in a later block."""
    lines = [b'{"id":"%d","pad":"%s"}' % (i, b"x" * 20) for i in range(1, 30_001)]
    if blank is not None:
        lines.insert(blank - 1, b"   ")
    src = Source("-", stdin=io.BytesIO(b"\n".join(lines) + b"\n"))
    got = [
        (p, r) for positions, raws in src.chunks(1000) for p, r in zip(positions, raws, strict=True)
    ]
    want = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    assert got == want
    assert len(got) == 30_000


@pytest.mark.parametrize("compress", [False, True])
def test_json_array_elements_are_indexed(compress: bool) -> None:
    data = gzip.compress(ARRAY) if compress else ARRAY
    src = Source("-", stdin=io.BytesIO(data))
    assert src.is_array
    assert list(src.items()) == [("events[0]", b'{"id":"a"}'), ("events[1]", b'{"id":"b"}')]


def test_a_broken_array_or_gzip_stream_is_a_source_error() -> None:
    with pytest.raises(ImportSourceError, match="not a JSON array"):
        list(Source("-", stdin=io.BytesIO(b'[{"id":"a"},')).items())
    truncated = gzip.compress(NDJSON * 100)[:-20]
    with pytest.raises(ImportSourceError, match="cannot be read"):
        list(Source("-", stdin=io.BytesIO(truncated)).items())
    big = gzip.compress(NDJSON * 100_000)  # the damage beyond the first block read
    with pytest.raises(ImportSourceError, match="cannot be read"):
        list(Source("-", stdin=io.BytesIO(big[:-20])).items())


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_rate_percent_and_eta_when_the_size_is_known() -> None:
    out = _Tty()
    src = Source("-", stdin=io.BytesIO(ARRAY))
    progress = Progress(out, src, array_total=200)
    progress.started -= 10  # ten seconds ago
    progress._last = 0.0
    progress.update(ImportResult(read=50, accepted=40, duplicates=5, rejected=5))
    line = out.getvalue()
    assert line.startswith("\r[")
    assert " 25.0%" in line
    assert "50 events" in line
    assert "5 ev/s" in line
    assert "ETA 0:00:30" in line
    assert "40 accepted" in line
    assert "5 dup" in line
    assert "5 rejected" in line


def test_progress_without_a_size_has_no_eta_and_a_final_line() -> None:
    out = io.StringIO()  # not a terminal: plain lines
    src = Source("-", stdin=io.BytesIO(NDJSON))
    assert src.total is None
    progress = Progress(out, src, array_total=None)
    progress.update(ImportResult(read=3, accepted=3), final=True)
    line = out.getvalue()
    assert "ETA" not in line
    assert "100.0%" in line  # a finished import is whole
    assert line.endswith("\n")


def _spans_read(path: str, spans: list[tuple[int, int]]) -> list[list[tuple[int, bytes]]]:
    parts = []
    for span in spans:
        src = Source(path, span=span)
        try:
            parts.append([(p, r) for ps, rs in src.chunks(7) for p, r in zip(ps, rs, strict=True)])
        finally:
            src.close()
    return parts


@pytest.mark.parametrize("jobs", [2, 3, 5])
def test_job_ranges_cut_at_line_boundaries_and_cover_the_file(jobs: int, tmp_path: Path) -> None:
    """``--jobs N``: the ranges start after a newline, join up to the whole file, and their
    sources read every line once, numbered from the range's start (blank lines skipped; a
    last line without its newline kept; a line starting with ``[`` is not an array)."""
    lines = [b'{"id":"%d","pad":"%s"}' % (i, b"x" * (i % 13)) for i in range(100)]
    lines[40] = b"   "
    lines[41] = b"[1, 2]"
    path = tmp_path / "e.ndjson"
    path.write_bytes(b"\n".join(lines))  # no newline at the end
    src = Source(str(path))
    spans = plan(src, str(path), jobs, explicit=True)
    src.close()
    assert len(spans) == jobs
    assert spans[0][0] == 0
    assert spans[-1][1] == path.stat().st_size
    data = path.read_bytes()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end == start
        assert data[start - 1 : start] == b"\n"
    got: list[tuple[int, bytes]] = []
    for (start, _), part in zip(spans, _spans_read(str(path), spans), strict=True):
        before = data[:start].count(b"\n")
        got += [(before + p, r) for p, r in part]
    assert got == [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def test_job_ranges_only_for_a_plain_ndjson_file_and_big_enough_by_default(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "e.ndjson"
    plain.write_bytes(NDJSON)
    gz = tmp_path / "e.ndjson.gz"
    gz.write_bytes(gzip.compress(NDJSON))
    arr = tmp_path / "e.json"
    arr.write_bytes(ARRAY)
    for path, split in ((plain, True), (gz, False), (arr, False)):
        src = Source(str(path))
        try:
            assert bool(plan(src, str(path), 2, explicit=True)) is split, path
            assert plan(src, str(path), 2, explicit=False) == []  # smaller than 2 parts
            assert plan(src, str(path), 1, explicit=True) == []
        finally:
            src.close()
    stdin = Source("-", stdin=io.BytesIO(NDJSON))
    assert plan(stdin, "-", 2, explicit=True) == []
    one = tmp_path / "one.ndjson"
    one.write_bytes(b'{"id":"a"}\n')  # one line: the second range would be empty
    src = Source(str(one))
    assert plan(src, str(one), 2, explicit=True) == [(0, 11)]
    src.close()
    assert JOB_MIN_BYTES >= 1 << 20
