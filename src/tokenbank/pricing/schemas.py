"""Request bodies of the pricing admin routes, and the JSON views they answer."""

from __future__ import annotations

from typing import Any

from tokenbank.api.admin import AdminModel, Decimalish
from tokenbank.api.schemas import Tokens
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.rates import ModelRate
from tokenbank.pricing.service import PricingSettings


class ModelRateUpdate(AdminModel):
    input_tokens_per_unit: Decimalish
    output_tokens_per_unit: Decimalish
    image_tokens: Tokens | None = None


class SettingsUpdate(AdminModel):
    token_multiplier: Decimalish | None = None
    tokens_per_usd: Tokens | None = None


def rate_json(rate: ModelRate) -> dict[str, Any]:
    return {
        "model": rate.model,
        "inputTokensPerUnit": decimal_text(rate.input_tokens_per_unit),
        "outputTokensPerUnit": decimal_text(rate.output_tokens_per_unit),
        "imageTokens": rate.image_tokens,
        "source": rate.source,
    }


def settings_json(settings: PricingSettings) -> dict[str, Any]:
    return {
        "tokenMultiplier": decimal_text(settings.token_multiplier),
        "tokensPerUsd": settings.tokens_per_usd,
    }
