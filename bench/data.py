"""The benchmark's data sets: deterministic CloudEvents, streamed in batches.

Shape (issue 5): 1 000 subjects, 30 days, 3 models; one heavy subject holds a fifth of all events;
events arrive in time order (as live ingest would see them). Every figure in a run is taken on
data built from the same seed, so a cached database and a freshly generated one are identical.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 10, 1, tzinfo=UTC)
"""Start of the data window (and of the entitlements' usage period)."""
DAYS = 30
T_END = T0 + timedelta(days=DAYS)
"""End of the data window; the server and the in-process container run on a clock frozen here."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0_US = int((T0 - EPOCH).total_seconds()) * 1_000_000
T_END_US = int((T_END - EPOCH).total_seconds()) * 1_000_000
SPAN_US = T_END_US - T0_US

SUBJECTS = 1000
HEAVY_SUBJECT = "customer-0000"
HEAVY_SHARE = 0.2
MODELS = ("gpt-4o", "claude-3-5", "llama-3-70b")
MODEL_WEIGHTS = (0.5, 0.3, 0.2)
EVENT_TYPE = "bench_prompt"
SOURCE = "bench"
METER_SLUG = "bench_tokens"
FEATURE_KEY = "bench_tokens"

METER_CONFIG = f"""\
# Written by the benchmark harness (bench/); one SUM meter over the generated events.
meters:
  - slug: {METER_SLUG}
    description: Benchmark tokens
    eventType: {EVENT_TYPE}
    aggregation: SUM
    valueProperty: $.tokens
    groupBy:
      model: $.model
"""


def subject_name(i: int) -> str:
    return f"customer-{i:04d}"


SUBJECT_NAMES = tuple(subject_name(i) for i in range(SUBJECTS))


@dataclass(frozen=True, slots=True)
class Row:
    """One event, flat: what a raw insert stores and what the JSON renders from."""

    id: str
    subject: str
    time_us: int
    tokens: int
    model: str


def _time_text(us: int, cache: dict[int, str]) -> str:
    minute = us // 60_000_000
    prefix = cache.get(minute)
    if prefix is None:
        if len(cache) > 4096:
            cache.clear()
        prefix = (EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
        cache[minute] = prefix
    rest_ms = (us % 60_000_000) // 1000
    return f"{prefix}{rest_ms // 1000:02d}.{rest_ms % 1000:03d}Z"


def subjects(n: int = SUBJECTS) -> list[str]:
    """The data set's subject keys; the first is the heavy one."""
    return [subject_name(i) for i in range(n)]


def generate(
    n_events: int,
    *,
    seed: int = 5,
    batch: int = 1000,
    source: str = SOURCE,
    id_prefix: str = "",
    n_subjects: int = SUBJECTS,
) -> Iterator[list[Row]]:
    """``n_events`` events in time order over the 30-day window, in batches of ``batch``.

    Times have millisecond precision (what clients send). Ids are random 128-bit hex (a UUID's
    entropy), so a dedup index sees random keys, as it would in production.
    """
    rng = random.Random(f"{seed}:{n_events}:{source}:{n_subjects}")
    others = SUBJECT_NAMES[1:n_subjects]
    out: list[Row] = []
    for i in range(n_events):
        time_us = T0_US + (i * SPAN_US) // n_events
        time_us -= time_us % 1000
        r = rng.random()
        if r < HEAVY_SHARE:
            subject = HEAVY_SUBJECT
        else:
            subject = others[int((r - HEAVY_SHARE) / (1 - HEAVY_SHARE) * len(others))]
        m = rng.random()
        model = MODELS[0] if m < MODEL_WEIGHTS[0] else MODELS[1] if m < 0.8 else MODELS[2]
        out.append(
            Row(
                f"{id_prefix}{rng.getrandbits(128):032x}",
                subject,
                time_us,
                rng.randint(1, 1000),
                model,
            )
        )
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


def to_json(rows: list[Row], source: str = SOURCE) -> list[str]:
    """Each row as one CloudEvent JSON object (compact, as an SDK would send it)."""
    cache: dict[int, str] = {}
    return [
        f'{{"specversion":"1.0","id":"{r.id}","source":"{source}","type":"{EVENT_TYPE}",'
        f'"subject":"{r.subject}","time":"{_time_text(r.time_us, cache)}",'
        f'"data":{{"tokens":{r.tokens},"model":"{r.model}"}}}}'
        for r in rows
    ]


def batch_body(rows: list[Row], source: str = SOURCE) -> bytes:
    return ("[" + ",".join(to_json(rows, source)) + "]").encode()


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ entitlements


def entitlement_body() -> dict[str, object]:
    return {
        "type": "metered",
        "featureKey": FEATURE_KEY,
        "usagePeriod": {"interval": "MONTH", "anchor": rfc3339(T0)},
        "measureUsageFrom": rfc3339(T0),
        "isSoftLimit": False,
    }


def grant_bodies() -> list[dict[str, object]]:
    """Five grants per entitlement: recurring, expiring, rolling over, in different priorities."""
    day = timedelta(days=1)
    return [
        {  # the plan's monthly allowance, used last
            "amount": 2_000_000,
            "priority": 10,
            "effectiveAt": rfc3339(T0),
            "expiration": {"duration": "MONTH", "count": 1},
            "maxRolloverAmount": 0,
        },
        {  # a weekly top-up that recurs and expires after a week
            "amount": 100_000,
            "priority": 2,
            "effectiveAt": rfc3339(T0),
            "expiration": {"duration": "WEEK", "count": 1},
            "recurrence": {"interval": "WEEK", "anchor": rfc3339(T0)},
        },
        {  # a promotion that expired on day 5
            "amount": 50_000,
            "priority": 1,
            "effectiveAt": rfc3339(T0 + 3 * day),
            "expiration": {"duration": "DAY", "count": 2},
        },
        {  # a daily recurring allowance from day 10
            "amount": 10_000,
            "priority": 3,
            "effectiveAt": rfc3339(T0 + 10 * day),
            "expiration": {"duration": "DAY", "count": 1},
            "recurrence": {"interval": "DAY", "anchor": rfc3339(T0 + 10 * day)},
        },
        {  # a yearly purchase from day 20, with rollover bounds
            "amount": 5_000_000,
            "priority": 5,
            "effectiveAt": rfc3339(T0 + 20 * day),
            "expiration": {"duration": "YEAR", "count": 1},
            "maxRolloverAmount": 1_000_000,
            "minRolloverAmount": 0,
        },
    ]
