"""The developers' guide's rule for module size: a module of ``src/allotment`` longer than
about 500 lines says why in its docstring, or is split by job (issue 14). A reason is the
words "500 lines", then a colon and the reason, in one sentence ("About 500 lines on purpose:
<why>", "A little over 500 lines: <why>"). Lines are counted as ``wc -l`` does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "allotment"
LIMIT = 500
REASON = re.compile(r"500 lines\b[^.:]*: *\w", re.IGNORECASE)


def test_every_module_over_the_limit_gives_its_reason() -> None:
    long = {}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > LIMIT:
            long[path.relative_to(SRC).as_posix()] = ast.get_docstring(ast.parse(text)) or ""
    missing = [name for name, doc in long.items() if not REASON.search(" ".join(doc.split()))]
    assert not missing, (
        f"over {LIMIT} lines without a reason in the module docstring: {missing} (split the "
        "module by job, or write 'About 500 lines on purpose: <why>' in its docstring)"
    )


def test_the_reason_is_recognised_only_with_a_reason() -> None:
    assert REASON.search("About 500 lines on purpose: the model and its run are one algorithm")
    assert REASON.search("Longer than ~500 lines on purpose: value and history share helpers")
    assert REASON.search("About 500 lines on purpose (a tenth is the model): one timeline")
    assert REASON.search("A little over 500 lines: one port for every usage read")
    assert not REASON.search("About 500 lines on purpose.")
    assert not REASON.search("The burn-down engine, 500 lines.")
