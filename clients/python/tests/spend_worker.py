"""One client process of the overspend tests: spends random known amounts of a budget through
a local lease until the server refuses a lease, then prints what it spent (stdout, JSON).

``stall`` mode (``... stall AMOUNT TTL``): spends ``AMOUNT`` once from a lease with TTL
``TTL`` seconds, prints it, then waits for a line on stdin before closing (the test stops the
process meanwhile: a stall between a spend and its commit)."""

from __future__ import annotations

import json
import random
import sys
from decimal import Decimal

from allotment_client import Allotment, BudgetExhausted, LeaseSettings


def main(url: str, customer: str, feature: str, seed: int, lease: int, most: int) -> None:
    rnd = random.Random(seed)
    spent = 0
    with Allotment(url, lease=LeaseSettings(Decimal(lease), ttl_seconds=60)) as a:
        while True:
            amount = rnd.randint(1, most)
            try:
                a.spend(customer, feature, amount)
            except BudgetExhausted:
                break
            spent += amount
    sys.stdout.write(json.dumps({"spent": spent}) + "\n")


def stall(url: str, customer: str, feature: str, lease: int, amount: int, ttl: int) -> None:
    with Allotment(url, lease=LeaseSettings(Decimal(lease), ttl_seconds=ttl)) as a:
        a.spend(customer, feature, amount)
        sys.stdout.write(json.dumps({"spent": amount}) + "\n")
        sys.stdout.flush()
        sys.stdin.readline()


if __name__ == "__main__":
    if sys.argv[4] == "stall":
        u, c, f, _, lease, amount, ttl = sys.argv[1:8]
        stall(u, c, f, int(lease), int(amount), int(ttl))
    else:
        u, c, f, s, lease, most = sys.argv[1:7]
        main(u, c, f, int(s), int(lease), int(most))
