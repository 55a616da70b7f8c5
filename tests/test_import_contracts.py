"""The import contracts in pyproject.toml catch what they promise (docs/architecture.md,
"Layers"): each case copies the package, adds ONE forbidden import and runs ``lint-imports``
on the copy, which must exit non-zero and name the contract(s) the import breaks as BROKEN
and no others; the unchanged copy keeps all of them. scripts/test runs the same command
(tests/test_architecture_doc.py checks that), so any of these imports fails the gate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {
    c["name"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "importlinter"]["contracts"]
}  # fmt: skip


def _named(prefix: str) -> str:
    [name] = [n for n in CONTRACTS if n.startswith(prefix)]
    return name


LAYERS = _named("layers:")
DOMAIN = _named("the domain imports nothing")
STORAGE_CLOCK = _named("storage never reads the clock")
HTTP = _named("http: the app assembles the routes")
ACYCLIC = _named("no circle between sibling modules")

# (module file to append to, the import line, the contracts it must break). The forbidden
# contracts follow imports through other modules: storage reaches the clock through a service
# (which names ``Clock``) or through the domain, once either imports it.
CASES: dict[str, tuple[str, str, set[str]]] = {
    "storage imports a service": (
        "storage/usage_marks.py", "import allotment.services.meters",
        {LAYERS, ACYCLIC, STORAGE_CLOCK}),
    "a service imports the container": (
        "services/features.py", "import allotment.container", {LAYERS, ACYCLIC}),
    "a service imports the settings": (
        "services/features.py", "import allotment.config", {LAYERS}),
    "a service imports http": (
        "services/features.py", "import allotment.http.problems", {LAYERS, ACYCLIC}),
    "the domain imports storage": (
        "domain/grants.py", "import allotment.storage.seam", {LAYERS, DOMAIN, ACYCLIC}),
    "the domain reads the clock": (
        "domain/grants.py", "import allotment.clock",
        {LAYERS, DOMAIN, STORAGE_CLOCK}),
    "storage reads the clock": (
        "storage/usage_marks.py", "import allotment.clock", {STORAGE_CLOCK}),
    "a route imports the app": (
        "http/routes/meters.py", "import allotment.http.app", {HTTP, ACYCLIC}),
    "two storage modules import each other": (
        "storage/entitlements_repo.py", "import allotment.storage.usage_marks", {ACYCLIC}),
}  # fmt: skip


def _lint(tmp_path: Path, file: str | None, line: str | None) -> tuple[int, dict[str, str]]:
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "src" / "allotment", copy / "allotment",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    if file is not None:
        target = copy / "allotment" / file
        assert target.is_file(), file
        target.write_text(target.read_text() + f"\n{line}  # the forbidden import\n")
    env = {**os.environ, "PYTHONPATH": str(copy), "COLUMNS": "1000"}
    run = subprocess.run(
        [str(LINT), "--no-cache", "--no-logo"], cwd=copy, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    verdicts = dict(
        (m.group(1), m.group(2))
        for m in re.finditer(r"^(.+) (KEPT|BROKEN)$", run.stdout, re.MULTILINE)
    )
    assert set(verdicts) == set(CONTRACTS), run.stdout + run.stderr
    return run.returncode, verdicts


def test_the_package_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    code, verdicts = _lint(tmp_path, None, None)
    assert code == 0
    assert set(verdicts.values()) == {"KEPT"}


def test_the_sibling_case_adds_the_way_back_of_an_existing_import() -> None:
    """The sibling-circle case relies on usage_marks importing entitlements_repo already."""
    text = (ROOT / "src" / "allotment" / "storage" / "usage_marks.py").read_text()
    assert re.search(r"^from allotment\.storage import entitlements_repo$", text, re.MULTILINE)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_forbidden_import_fails_the_gate_naming_its_contract(tmp_path: Path, case: str) -> None:
    file, line, broken = CASES[case]
    code, verdicts = _lint(tmp_path, file, line)
    assert code != 0
    assert {name for name, v in verdicts.items() if v == "BROKEN"} == broken
