"""The package as users install it: a built wheel in a fresh venv, not the editable work tree.

An editable install reads ``openapi/*.yaml`` and the migrations straight from ``src/``, so a
file missing from the package data passes every other test and fails only for users (issue
12, finding 8: ``/api/v1/openapi.json`` was a 500 after ``pip install .``). This test builds
the wheel from a copy of the tracked sources, checks that it carries every data file of
``src/allotment``, installs it into a new venv (pip's cache and PyPI only), starts that venv's
``allotment serve`` on each engine and does a meter round trip and a console page through
it.

About 15–25 s (wheel build ~6 s, install ~9 s with a warm pip cache), hence ``slow``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import ROOT, ServerProcess, unique

pytestmark = pytest.mark.slow

_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _tracked_sources() -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "pyproject.toml", "README.md", "src"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel built from the tracked files, installed in a fresh venv."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "src-copy"
    for rel in _tracked_sources():
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    dist = base / "dist"
    subprocess.run([*_PIP, "wheel", "--no-deps", "-w", str(dist), str(tree)], check=True)
    (wheel,) = dist.glob("allotment-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([*_PIP, "--python", str(venv / "bin" / "python"), "install", str(wheel)],
                   check=True)  # fmt: skip
    return wheel, venv


def test_the_wheel_carries_every_data_file_of_the_package(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        packed = {n for n in zf.namelist() if n.startswith("allotment/")}
    wanted = {
        rel.removeprefix("src/") for rel in _tracked_sources() if rel.startswith("src/allotment/")
    }
    assert sorted(wanted - packed) == []
    assert "allotment/py.typed" in packed


def test_the_installed_server_serves_the_document_and_a_meter_round_trip(
    installed: tuple[Path, Path], tmp_path: Path, new_db_url: Callable[[], str]
) -> None:
    """On each engine: the wheel's migrations build the schema, its fragments the document, its
    templates and static files the console."""
    _, venv = installed
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import allotment; print(allotment.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not src/

    server = ServerProcess(
        new_db_url(),
        command=[str(venv / "bin" / "allotment")],
        env={"PYTHONPATH": ""},
    ).start()
    try:
        with server.client() as c:
            r = c.get("/api/v1/openapi.json")
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["openapi"] == "3.0.3"
            assert "/api/v1/meters/{meterIdOrSlug}/query" in doc["paths"]

            slug, event_type = unique("m"), unique("type")
            r = c.post("/api/v1/meters", json={"slug": slug, "aggregation": "SUM",
                       "eventType": event_type, "valueProperty": "$.tokens"})  # fmt: skip
            assert r.status_code == 200, r.text
            now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
            event = {"specversion": "1.0", "id": unique("e"), "source": "wheel-test",
                     "type": event_type, "subject": "s1", "time": now,
                     "data": {"tokens": "12.5"}}  # fmt: skip
            r = c.post("/api/v1/events", json=event,
                       headers={"content-type": "application/cloudevents+json"})  # fmt: skip
            assert r.status_code == 204, r.text
            r = c.get(f"/api/v1/meters/{slug}/query")
            assert r.status_code == 200, r.text
            assert [row["value"] for row in r.json()["data"]] == [12.5]

            for path, media in (("/console/static/console.css", "text/css"),
                                ("/console/meters", "text/html")):  # fmt: skip
                r = c.get(path)  # no key exists: the console is open on loopback
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith(media), r.headers
            assert slug in r.text  # the page rendered from the wheel's templates
    finally:
        server.stop()
