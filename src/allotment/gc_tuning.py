"""Garbage-collector settings for a server process.

CPython's cyclic collector runs a young-generation pass every 700 new container objects and
a full pass whenever the survivors have grown by a quarter, each full pass walking every
tracked object of the process. A request that builds many objects (a 1000-event batch, a
90 000-row meter query) therefore pays for several full passes over everything alive,
although almost all of its garbage is freed by reference counting and never forms cycles.

:func:`tune_gc` moves what start-up created into the permanent generation (``gc.freeze``) and
raises the thresholds, so collections are rarer and walk less. Measured in process on the
benchmark data (commands in docs/benchmarks.md): the 90 000-row all-subjects meter query at
10 M events 1 630–1 920 ms → 1 210 ms (with the collector disabled: 1 120–1 160 ms); decode and
prefold of 1000-event batches 19.8 → 16.7 µs per event; the ingest writer 42.6 → 40.3 µs per
event. Cycles are still collected, only later; memory stays bounded by the thresholds.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000
"""New container objects between young collections (CPython's default: 700)."""
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 100


def tune_gc() -> None:
    """Freeze what exists now (call once the application is built) and raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
