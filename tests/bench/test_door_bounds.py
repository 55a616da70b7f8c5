"""bench/door_bounds.py stays runnable (docs/limits.md quotes it): a tiny run prints both
bodies' figures, and turning the bounds off for the baseline is undone afterwards."""

from __future__ import annotations

import pytest

from allotment.http.routes import events as door
from bench import door_bounds


def test_a_tiny_run_reports_both_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    typed, check = door._typed, door.violation
    door_bounds.main(["--events", "20", "--batches", "2", "--rounds", "2"])
    out = capsys.readouterr().out
    assert out.count("bounded / unbounded = ") == 2, out
    assert door._typed is typed
    assert door.violation is check
