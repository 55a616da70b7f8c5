"""One client process of the overspend test: spends random known amounts of a budget through
a local lease until the server refuses a lease, then prints what it spent (stdout, JSON)."""

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


if __name__ == "__main__":
    u, c, f, s, lease, most = sys.argv[1:7]
    main(u, c, f, int(s), int(lease), int(most))
