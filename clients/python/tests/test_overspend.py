"""The overspend bound (README, "Overspend bound"), driven by client processes with local
budget leases against one budget on a real server: spends of known amounts never take the
customer past the budget (overspend 0), nothing spent goes unrecorded, and what stays unused
at the end is at most (N - 1) leases plus one spend; a process stalled between a spend and its
commit for longer than the lease's TTL takes the customer past the budget, by at most one
lease."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
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
    recorded = _recorded(client, g.customer, g.meter)
    assert recorded == sum(spent)  # every local spend was committed, once
    assert recorded <= BUDGET  # overspend 0 with known amounts
    assert recorded >= BUDGET - (N - 1) * LEASE - MOST  # leases held elsewhere, one spend
    assert all(s > 0 for s in spent)  # every process got leases


def _recorded(client: httpx.Client, customer: str, meter: str) -> Decimal:
    r = client.get(
        "/v1/ingest/meter-data",
        params={"customer_reference": customer, "meter_reference": meter},
    )
    return Decimal(r.json()["data"][0]["value"])


def test_a_stall_past_the_ttl_overspends_by_at_most_one_lease(
    server: ServerProcess, client: httpx.Client
) -> None:
    """The bound's stall term, N·L·[a stall longer than (1 − f)·T]: process S spends from a
    lease and is stopped (SIGSTOP) before it commits, for longer than the lease's TTL; its
    hold expires and process P leases and spends the whole budget again; S, resumed, commits
    what it spent. The customer ends past the budget — by more than 0 and at most L."""
    ttl, stalled_spend = 4, LEASE - 1
    g = build_guide(client, budget=BUDGET)
    worker = str(Path(__file__).with_name("spend_worker.py"))
    base = [sys.executable, worker, server.url, g.customer, g.budget]
    s = subprocess.Popen(
        [*base, "stall", str(LEASE), str(stalled_spend), str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert s.stdout is not None
        assert s.stdin is not None
        line = s.stdout.readline()  # spent; its commit is due (1 − f)·T = 2 s after the lease
        s.send_signal(signal.SIGSTOP)
        assert json.loads(line)["spent"] == stalled_spend, s.stderr.read() if s.stderr else ""
        time.sleep(ttl + 1)  # stopped past the TTL: the server's hold has expired
        p = subprocess.run(
            [*base, "1", str(LEASE), str(MOST)], capture_output=True, timeout=300, cwd=ROOT
        )
        assert p.returncode == 0, p.stderr.decode()
        spent_p = Decimal(json.loads(p.stdout)["spent"])
        assert spent_p >= BUDGET - MOST  # P alone leased the whole budget again
    finally:
        s.send_signal(signal.SIGCONT)
    _, err = s.communicate(b"\n", timeout=60)
    assert s.returncode == 0, err.decode()
    recorded = _recorded(client, g.customer, g.meter)
    assert recorded == spent_p + stalled_spend  # S's late commit counted, once
    assert BUDGET < recorded <= BUDGET + LEASE  # past the budget, by at most one lease
