"""Routes: costs (Token Service dialect): the cost table, with an estimate in US dollars.

The dollar estimate of ``tokens`` is ``tokens / TOKENBANK_TOKENS_PER_USD`` (10,000
tokens per dollar by default, the billing defaults), computed exactly with ``Decimal``:

- ``estimatedUsd`` is ``"$"`` followed by that amount rounded half-up to 4 decimal
  places, then with trailing zeros removed down to no fewer than 2 decimals:
  10 tokens -> ``"$0.001"``, 100 -> ``"$0.01"``, 12,345 -> ``"$1.2345"``,
  1 -> ``"$0.0001"``, 10,000 -> ``"$1.00"``; thousands are not grouped.
- ``estimatedUsdCents`` is the amount in whole cents, rounded half-up (an integer,
  as all money in tokenbank): 10 tokens -> 0, 50 -> 1, 12,345 -> 123.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fastapi import APIRouter, Request

from tokenbank.api.auth import ReadKey
from tokenbank.api.responses import AUTHENTICATED, errors
from tokenbank.api.state import get_services

router = APIRouter(tags=["costs (Token Service dialect)"], responses=errors(AUTHENTICATED))

USD_MAX_DECIMALS = Decimal("0.0001")
USD_MIN_DECIMALS = 2
WHOLE = Decimal(1)


def usd(tokens: int, tokens_per_usd: int) -> Decimal:
    """The exact dollar value of ``tokens`` (no rounding)."""
    return Decimal(tokens) / Decimal(tokens_per_usd)


def format_usd(tokens: int, tokens_per_usd: int) -> str:
    """``"$"`` + the amount, half-up to 4 decimals, trailing zeros trimmed to 2."""
    amount = usd(tokens, tokens_per_usd).quantize(USD_MAX_DECIMALS, rounding=ROUND_HALF_UP)
    text = f"{amount:f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(USD_MIN_DECIMALS, "0")
    return f"${whole}.{fraction}"


def usd_cents(tokens: int, tokens_per_usd: int) -> int:
    """The amount in whole cents, rounded half-up."""
    return int((usd(tokens, tokens_per_usd) * 100).quantize(WHOLE, rounding=ROUND_HALF_UP))


@router.get(
    "/api/costs",
    summary='The cost table: tokens per action, and "$" estimates (half-up, 2-4 decimals)',
)
async def list_costs(request: Request, principal: ReadKey) -> dict[str, Any]:
    """``{"data": [{action, tokens, estimatedUsd, estimatedUsdCents}]}``, sorted by
    action. ``estimatedUsd`` is ``"$"`` + ``tokens / TOKENBANK_TOKENS_PER_USD`` rounded
    half-up to 4 decimals with trailing zeros trimmed to no fewer than 2 (``"$0.001"``,
    ``"$1.2345"``, ``"$1.00"``); ``estimatedUsdCents`` is whole cents, rounded half-up.
    """
    services = get_services(request)
    per_usd = services.settings.tokens_per_usd
    costs = await services.tokens.get_operation_costs()
    return {
        "data": [
            {
                "action": action,
                "tokens": tokens,
                "estimatedUsd": format_usd(tokens, per_usd),
                "estimatedUsdCents": usd_cents(tokens, per_usd),
            }
            for action, tokens in sorted(costs.items())
        ]
    }
