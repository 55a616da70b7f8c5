"""The overspend bound (README, "Overspend bound"), driven by N client processes with local
budget leases against one budget on a real server: spends of known amounts never take the
customer past the budget (overspend 0), nothing spent goes unrecorded, and what stays unused
at the end is at most (N - 1) leases plus one spend."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from tests.enforcement.catalog_setup import build_guide
from tests.support import ROOT, ServerProcess

N = 4
LEASE = 100
MOST = 9
BUDGET = 2000

pytestmark = pytest.mark.slow


def test_n_processes_with_leases_never_pass_the_budget(
    server: ServerProcess, client: httpx.Client
) -> None:
    g = build_guide(client, budget=BUDGET)
    worker = Path(__file__).with_name("spend_worker.py")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(worker),
                server.url,
                g.customer,
                g.budget,
                str(seed),
                str(LEASE),
                str(MOST),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for seed in range(N)
    ]
    spent = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        spent.append(Decimal(json.loads(out)["spent"]))
    r = client.get(
        "/v1/ingest/meter-data",
        params={"customer_reference": g.customer, "meter_reference": g.meter},
    )
    recorded = Decimal(r.json()["data"][0]["value"])
    assert recorded == sum(spent)  # every local spend was committed, once
    assert recorded <= BUDGET  # overspend 0 with known amounts
    assert recorded >= BUDGET - (N - 1) * LEASE - MOST  # leases held elsewhere, one spend
    assert all(s > 0 for s in spent)  # every process got leases
