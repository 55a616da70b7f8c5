"""docs/limits.md lists every bound (issue 12, "Done when"): each constant of
``domain/limits.py`` is named there, in backticks (``EVENTS_LIST_LIMIT_MAX`` / ``_DEFAULT``
names both), so a new bound without its line in the document fails here."""

from __future__ import annotations

import re

from allotment.domain import limits
from tests.support import ROOT


def documented() -> set[str]:
    text = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", text))
    for first, suffix in re.findall(r"`([A-Z][A-Z0-9_]+)` / `(_[A-Z0-9_]+)`", text):
        names.add(first.rsplit("_", 1)[0] + suffix)
    return names


def test_every_constant_of_limits_is_in_the_document() -> None:
    constants = {name for name in vars(limits) if name.isupper() and not name.startswith("_")}
    assert len(constants) >= 50  # the bounds as of issue 12
    assert sorted(constants - documented()) == []


def test_the_shorthand_names_a_real_constant() -> None:
    assert "EVENTS_LIST_LIMIT_DEFAULT" in documented()
    assert hasattr(limits, "EVENTS_LIST_LIMIT_DEFAULT")
