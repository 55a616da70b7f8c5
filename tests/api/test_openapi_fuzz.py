"""A bounded schemathesis run over every operation of the served document, against a real
server process on each backend (issue 12): no 5xx, every status code, content type and body
as the document says.

The server has authentication on (an admin key made with the CLI before it starts; the run
sends it on every request), and :mod:`tests.api.fuzz_seed` first creates one of every
resource, whose ids schemathesis uses for the path parameters (``parameters`` in its config
file, per operation where one name means different things). Phases: ``examples`` (the
document's examples), ``coverage`` (boundary and negative values for each parameter and
field, deterministic) and ``fuzzing`` (``FUZZ_EXAMPLES`` generated cases per operation, a
fixed seed). About 65–90 s per backend on 2 cores (~6 650 cases), hence ``slow``.

The console's operations (``/console/…``, tag ``console``) stay in the run, with the same
checks: they are routes the server answers, and a 500 on a page's query parameters or a
form's body breaks the console as surely as one on the API. They answer HTML (and CSS and
script), never problem+json: their fragment (``openapi/console.yaml``) declares those media
types and every status the pages and forms give, so ``content_type_conformance`` and
``status_code_conformance`` hold them to it; ``response_schema_conformance`` has nothing to
check there (an HTML body has no schema). The pages and forms get real ids (fuzz_seed.py);
each form gets a matching CSRF token and cookie, so its own handling is fuzzed and not only
the CSRF refusal (tests/console covers that); the usage page (``/console/portal``) gets a
portal token like the portal query (fuzz_hooks.py).

The checks are chosen in the config file, not with ``--checks``: a command-line choice
overrides every per-operation setting. Known wrong answers whose fix lies elsewhere (each
narrow: one check of one operation, with its reason) are in ``KNOWN``; an empty list is the
goal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.auth_support import create_key
from tests.api.fuzz_seed import Seeded, seed
from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
FUZZ_EXAMPLES = 4
"""Generated cases per operation in the fuzzing phase (plus the coverage phase's own)."""
SEED = 12
WORKERS = 1
"""One thread: on CPython 3.11 before 3.11.8, Hypothesis describing its lambdas (``ast.parse``)
in two threads at once now and then fails with ``SystemError: AST constructor recursion depth
mismatch`` (CPython gh-106905), a run error that is not the server's. Two workers saved
~15 s of ~85 s per engine."""
REQUEST_TIMEOUT_S = 15.0

KNOWN: list[tuple[str, str | None, str]] = []
"""(operation name, the one check left off for it or None for the whole operation, reason)
for answers the run knows are wrong and whose fix is elsewhere; keep it empty."""


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string for these values


def _table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{_toml_str(k)} = {_toml_str(v)}" for k, v in values.items()) + " }"


def _config(seeded: Seeded) -> str:
    lines = [
        f"seed = {SEED}",
        "[generation]",
        "with-security-parameters = false",  # the key above, not generated X-API-KEY values
        "[checks]",  # here, not --checks: a command-line choice would override KNOWN's below
        "enabled = false",
        *(f"{check}.enabled = true" for check in CHECKS),
        "[parameters]",
        *(f"{_toml_str('path.' + k)} = {_toml_str(v)}" for k, v in seeded.everywhere.items()),
    ]
    for (method, path), params in sorted(seeded.by_operation.items()):
        lines += [
            "[[operations]]",
            f"include-name = {_toml_str(f'{method} {path}')}",
        ]
        lines.append(f"parameters = {_table({'path.' + k: v for k, v in params.items()})}")
    for name, check, _reason in KNOWN:
        lines += ["[[operations]]", f"include-name = {_toml_str(name)}"]
        lines.append("enabled = false" if check is None else f"checks.{check}.enabled = false")
    return "\n".join(lines) + "\n"


def _st() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return found


def test_schemathesis_finds_nothing(
    make_server: Callable[..., ServerProcess], new_db_url: Callable[[], str], tmp_path: Path
) -> None:
    st = _st()
    db_url = new_db_url()
    admin = create_key(db_url, "fuzz-admin", "admin")
    server = make_server(db_url)
    with httpx.Client(
        base_url=server.url, timeout=30.0, headers={"authorization": f"Bearer {admin}"}
    ) as c:
        seeded = seed(c)
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(seeded), encoding="utf-8")
    extra = os.environ.get("FUZZ_EXTRA_ARGS", "").split()
    done = subprocess.run(
        [
            st,
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{server.url}/api/v1/openapi.json",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(FUZZ_EXAMPLES),
            "--workers",
            str(WORKERS),
            "--output-truncate",
            "true",
            "--request-timeout",
            str(REQUEST_TIMEOUT_S),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_TELEMETRY": "false",
            "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks",
            "PYTHONPATH": str(ROOT),
            "FUZZ_BASE_URL": server.url,
            "FUZZ_ADMIN_KEY": admin,
            "FUZZ_PORTAL_SUBJECT": seeded.everywhere["subjectIdOrKey"],
        },
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    print(out[-3000:])  # the summary, shown with -s or on failure
    tested = re.search(r"Tested: (\d+)", out)
    assert done.returncode == 0, out[-20000:] + "\n--- server log ---\n" + server.logs()
    assert tested is not None, out[-5000:]
