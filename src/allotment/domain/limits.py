"""Every explicit bound of the service, in one place. Each has a test at N and N+1."""

from __future__ import annotations

# Ingest
EVENTS_PER_BATCH_MAX = 10_000
"""Events in one POST /api/v1/events request."""
REQUEST_BODY_BYTES_MAX = 16 * 1024 * 1024
"""Bytes in one request body (any route)."""
FOLD_MAX_LAG_DEFAULT = 200_000
"""Unfolded events past which ingest waits for the fold (``ALLOTMENT_FOLD_MAX_LAG``)."""
FOLD_MAX_LAG_MAX = 1_000_000_000
"""Largest ``ALLOTMENT_FOLD_MAX_LAG`` (in effect: no bound)."""

# Queries
QUERY_WINDOWS_MAX = 100_000
"""Windows one meter query may produce (e.g. MINUTE windows over ~69 days)."""
EVENTS_LIST_LIMIT_MAX = 100
EVENTS_LIST_LIMIT_DEFAULT = 100
EVENTS_LIST_WINDOW_DAYS = 32
PAGE_SIZE_MAX = 1000
PAGE_SIZE_DEFAULT = 100
LEGACY_LIST_LIMIT_DEFAULT = 1000
METERS_LIST_MAX = 1000
SUBJECTS_PER_UPSERT_MAX = 1000

# Entitlements
GRANTS_PER_ENTITLEMENT_MAX = 1000
RECURRENCE_ITERATIONS_MAX = 1_000_000
HISTORY_WINDOWS_MAX = 10_000

# Customers
CUSTOMER_SUBJECT_KEYS_MAX = 100
"""Subject keys (``usageAttribution.subjectKeys``) of one customer."""

# Catalog (/v1)
ENUM_VALUES_MAX = 100
"""``enum_values`` of one ENUM feature."""
PLAN_ENTITLEMENTS_MAX = 200
"""Entries of one ``entitlements`` list (a plan version, or one subscription PATCH)."""

# API keys and audit
AUTH_CACHE_SECONDS_MAX = 60.0
"""Longest an API key lookup may be reused without reading the database (docs/security.md: the
bound on a revoke reaching another replica when its revocation notice cannot)."""
AUTH_CACHE_SECONDS_DEFAULT = 1.0
AUTH_CACHE_ENTRIES_MAX = 1024
"""Keys one process remembers at a time (the oldest entry is dropped first)."""
API_KEYS_LIST_LIMIT_MAX = 1000
AUDIT_LIST_LIMIT_MAX = 1000
AUDIT_LIST_LIMIT_DEFAULT = 100
AUDIT_BODY_BYTES_MAX = 64 * 1024
"""A change's before/after JSON is kept whole up to this size, else recorded as truncated."""
# Notifications (docs/notifications.md)
NOTIFICATION_NAME_MAX = 256
NOTIFICATION_THRESHOLDS_MAX = 10
"""Thresholds in one balance-threshold rule (OpenMeter's maxItems)."""
NOTIFICATION_RULE_CHANNELS_MAX = 100
NOTIFICATION_RULE_FEATURES_MAX = 100
WEBHOOK_URL_LENGTH_MAX = 2048
WEBHOOK_CUSTOM_HEADERS_MAX = 50
WEBHOOK_HEADER_VALUE_LENGTH_MAX = 4096
# Enforcement (POST /v1/customers/{ref}/authorize, reservations)
AUTHORIZE_ITEMS_MAX = 64
"""Items in each of ``checks``, ``consume`` and ``reserve`` of one authorize."""
IDEMPOTENCY_KEY_LENGTH_MAX = 255
"""Characters of an ``idempotency_key``."""
IDEMPOTENCY_TTL_SECONDS = 86_400
"""How long the first answer of an ``idempotency_key`` is kept and returned again (24 h)."""
RATE_CONSUME_AMOUNT_MAX = 1_000_000
"""Requests one consume item may count against a rate limit."""
RESERVATION_TTL_SECONDS_MAX = 86_400
"""Longest ``ttl_seconds`` of a reservation (1 day)."""
RESERVATION_TTL_SECONDS_DEFAULT = 300
"""``ttl_seconds`` when a reserve item leaves it out."""

# Input ranges (docs/limits.md): what the door accepts, so that everything stored reads back
NUMBER_INTEGER_DIGITS_MAX = 24
"""Digits before the point of an accepted number: ``|x| < 10^24`` (grant amounts, every amount
field, every JSON number of an event, meter values)."""
NUMBER_FRACTION_DIGITS_MAX = 18
"""Digits after the point of an accepted number, trailing zeros not counted (a multiple of
``10^-18``). With the bound above, a sum of up to ``10^18`` accepted numbers has at most
24 + 18 + 18 = 60 significant digits: exact in the 60-digit context every amount is summed and
formatted in (``decimals.EXACT``, the engine's context)."""
JSON_DEPTH_MAX = 32
"""Nesting of arrays and objects in one JSON request body, the top level being 1 (an event
batch: the array 1, an event 2, its ``data`` 3)."""
JSON_OBJECT_KEYS_MAX = 1000
"""Keys of one JSON object anywhere in a request body (an event's ``data`` included)."""
TIME_MIN_YEAR = 1970
"""Earliest accepted instant: ``1970-01-01T00:00:00Z`` (the epoch storage counts from)."""
TIME_MAX_YEAR = 9000
"""Accepted instants lie before ``9000-01-01T00:00:00Z``: a margin of 999 years under
Python's (and RFC 3339's) year 9999 keeps every derived instant (period ends, expirations,
windows in any time zone) representable."""
INTERVAL_YEARS_MAX = 100
"""Longest ISO 8601 interval of a usage period or a grant recurrence (``P100Y``, ``P1200M``,
``P36525D``, …; months and years at their average length): with ``TIME_MAX_YEAR``'s margin,
every period end stays a representable instant."""
QUERY_INT_MAX = 2**31 - 1
"""Largest integer query parameter (``page``, ``offset``, ``limit``, …), unless a smaller
limit applies: ``page × pageSize`` stays far inside PostgreSQL's BIGINT."""
ENGINE_PERIODS_MAX = 20_000
"""Usage periods and grant recurrences one value or history computation may walk (e.g.
2.3 years of PT1H periods, 54 years of daily ones); past it the read is a 400 naming
``time``. Bounds a read's CPU to about 4 s on this project's 2-core machine."""

# Slow and greedy HTTP clients (http/server_protocol.py; docs/limits.md "Connections")
HTTP_HEADER_TIMEOUT_SECONDS = 10.0
"""From a connection's accept (or the first byte of its next request) to the end of the
request's headers: past it the server answers 408 and closes the connection."""
HTTP_HEADER_BYTES_MAX = 64 * 1024
"""Bytes of one request's request line and headers: past it 431 and closed."""
HTTP_BODY_IDLE_SECONDS = 10.0
"""Longest pause between two pieces of a request body: past it 408 and closed."""
HTTP_BODY_TIMEOUT_SECONDS = 60.0
"""From the end of the headers to the end of the body (a 16 MiB body needs ~280 KB/s):
past it 408 and closed."""
HTTP_CLIENT_CONNECTIONS_MAX = 64
"""Open connections of one client address to one server process: the next is answered 503
and closed. Behind a gateway every request comes from its address: raise it there."""
HTTP_SERVER_CONNECTIONS_MAX = 2048
"""Open connections plus running requests of one process (uvicorn's ``limit_concurrency``):
a request past it is answered 503."""
