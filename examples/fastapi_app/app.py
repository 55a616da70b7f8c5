"""A FastAPI app enforced by Allotment's middleware: the seed guide's three patterns in one
endpoint — a rate limit, a token budget (reserve an estimate, commit the actual), model tiers.

Run:  ALLOTMENT_URL=http://127.0.0.1:8888 uvicorn examples.fastapi_app.app:app

Every request names its customer in ``X-Customer`` and its model in ``?model=``. Denials are
answered by the middleware (402/403/429 problem+json with Retry-After and RateLimit fields);
the endpoint only runs when everything is allowed, and reports the tokens it really used.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from allotment_client import AsyncAllotment
from allotment_client.middleware import AllotmentMiddleware, RequestInfo, Requirements
from fastapi import FastAPI, Request

RATE = os.environ.get("ALLOTMENT_RATE_FEATURE", "requests_per_minute")
BUDGET = os.environ.get("ALLOTMENT_BUDGET_FEATURE", "monthly_token_budget")
MODELS = os.environ.get("ALLOTMENT_MODELS_FEATURE", "available_models")


def customer_of(r: RequestInfo) -> str | None:
    return r.headers.get("x-customer")


def requirements_of(r: RequestInfo) -> Requirements | None:
    if not r.path.startswith("/chat"):
        return None  # health checks and docs are not metered
    return Requirements(
        checks=[{"feature_reference": MODELS, "value": r.query.get("model", "gpt-4o-mini")}],
        consume=[{"feature_reference": RATE}],
        reserve=[
            {
                "feature_reference": BUDGET,
                "amount": r.query.get("max_tokens", "4000"),
                "ttl_seconds": 300,
            }
        ],
    )


def create_app(base_url: str | None = None, api_key: str | None = None) -> FastAPI:
    client = AsyncAllotment(
        base_url or os.environ.get("ALLOTMENT_URL", "http://127.0.0.1:8888"),
        api_key or os.environ.get("ALLOTMENT_API_KEY"),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()  # flush queued events, settle leases

    app = FastAPI(lifespan=lifespan)
    app.state.allotment = client
    app.add_middleware(
        AllotmentMiddleware,  # type: ignore[arg-type]
        client=client,
        customer=customer_of,
        requirements=requirements_of,
    )

    @app.post("/chat")
    async def chat(request: Request, prompt: str, model: str = "gpt-4o-mini") -> dict[str, object]:
        # stand-in for a streamed completion: the cost is known only at the end
        tokens = len(prompt.split()) * 10
        request.state.allotment.use(tokens)
        return {"model": model, "tokens": tokens}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app() if os.environ.get("ALLOTMENT_URL") else None
