"""image-gen: a small FastAPI app that bills its users through tokenbank.

Seed 000's complete example in Python: a cost table, ``POST /generate`` with dynamic
costs and a refund when the generation fails, ``POST /upscale`` at a fixed cost,
``GET /costs`` and ``POST /estimate``. Users prove who they are with a JWT that
tokenbank issued (``tokenbank users token USER_ID``), sent as ``Authorization: Bearer``.

Run it (see README.md beside this file)::

    TOKEN_SERVICE_URL=http://127.0.0.1:8000 TOKEN_SERVICE_API_KEY=tb_... \\
    PLATFORM_JWT_SECRET=... uvicorn app:app --port 8001
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at
# runtime, and they name variables local to create_app.

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tokenbank.client import AsyncTokenClient
from tokenbank.client.fastapi import Charges, TokenBank, jwt_user_id

# The cost table: tokens per action (seed 000).
COSTS = {
    "image-256": 2,
    "image-512": 5,
    "image-1024": 12,
    "video-short": 25,
    "video-long": 50,
}
UPSCALE_COST = 3
TOKENS_PER_USD = 10_000  # tokenbank's default price of a token

Kind = Literal["image-256", "image-512", "image-1024", "video-short", "video-long"]
Generator = Callable[[str, str], Awaitable[dict[str, Any]]]


class GenerateRequest(BaseModel):
    type: Kind
    prompt: str = Field(min_length=1, max_length=2_000)


class EstimateRequest(BaseModel):
    type: Kind


class GenerationFailed(Exception):
    """The expensive work failed; the tokens have been refunded."""


async def fake_generation(kind: str, prompt: str) -> dict[str, Any]:
    """Stands in for the expensive work (a call to an image model)."""
    return {"url": f"https://images.example/{uuid.uuid4().hex}.png", "type": kind}


def estimated_usd(tokens: int) -> str:
    return f"${Decimal(tokens) / TOKENS_PER_USD:.4f}"


def create_app(
    *,
    client: AsyncTokenClient | None = None,
    generate: Generator = fake_generation,
    jwt_secret: str | None = None,
) -> FastAPI:
    """The app; without arguments everything comes from the environment."""
    app = FastAPI(title="image-gen")
    current_user = jwt_user_id(jwt_secret)  # PLATFORM_JWT_SECRET when None
    bank = TokenBank(app, user_id=current_user, client=client)

    @app.exception_handler(GenerationFailed)
    async def generation_failed(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": "Generation failed — tokens refunded"}, status_code=500)

    @app.post("/generate")
    async def generate_route(
        body: GenerateRequest, charges: Annotated[Charges, bank.charges()]
    ) -> dict[str, Any]:
        cost = COSTS[body.type]
        # 1. Deduct (a 402 with buyTokensUrl when the user has too few tokens).
        charge = await charges.deduct(cost, description=f"{body.type} generation")
        # 2. Do the expensive work; if it raises, the charges dependency refunds.
        try:
            result = await generate(body.type, body.prompt)
        except Exception as error:
            raise GenerationFailed from error
        return {"data": {**result, "tokensUsed": cost, "remainingBalance": charge.balance}}

    @app.post("/upscale", dependencies=[bank.require_tokens(UPSCALE_COST, description="Upscale")])
    async def upscale(request: Request) -> dict[str, Any]:
        charge = request.state.token_charge  # already deducted
        return {"data": {"upscaled": True, "remainingBalance": charge.balance}}

    @app.get("/costs")
    async def costs() -> dict[str, Any]:
        return {
            "data": [
                {"action": action, "tokens": tokens, "estimatedUsd": estimated_usd(tokens)}
                for action, tokens in COSTS.items()
            ]
        }

    @app.post("/estimate")
    async def estimate(
        body: EstimateRequest, user_id: Annotated[str, Depends(current_user)]
    ) -> dict[str, Any]:
        cost = COSTS[body.type]
        balance = await bank.client.get_balance(user_id)
        return {
            "data": {
                "action": body.type,
                "cost": cost,
                "currentBalance": balance.balance,
                "canAfford": balance.available >= cost,
                "remainingAfter": max(0, balance.balance - cost),
            }
        }

    return app


app = create_app()
