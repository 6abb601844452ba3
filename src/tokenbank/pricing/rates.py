"""The model price table shipped with tokenbank, and the global pricing defaults.

A *rate* is how many tokenbank tokens one unit of a model's usage costs before the
global token multiplier: one input or output token of an LLM, or one image. The
table below is what a fresh installation prices with; an admin overrides any model
(or adds one) in the ``model_prices`` table (``tokenbank models set``, or
``PUT /api/admin/models/{model}``), and deleting the override restores this row.

The defaults are the billing defaults': one billable token per actual API token, times the
token multiplier of 1.5 (so 5,000 actual tokens cost 7,500), and fixed image costs of
6,000 (DALL-E 3), 3,000 (DALL-E 2) and 4,500 (Google) tokens. An image from a model
not in the table costs the ``default`` row's 6,000 tokens, the dearest of the billing defaults',
so that an unknown model is never under-charged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from tokenbank.errors import InvalidInput

DEFAULT_MODEL = "default"
DEFAULT_TOKEN_MULTIPLIER = Decimal(
    "1.5"
)  # the billing defaults: "charges 150% of actual API tokens"
MAX_MODEL_NAME_LENGTH = 128
MAX_RATE_TOKENS_PER_UNIT = Decimal(1_000_000)
MAX_TOKEN_MULTIPLIER = Decimal(1_000)
MAX_IMAGE_TOKENS = 1_000_000_000
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:/@+-]*$")

RateSource = Literal["shipped", "database"]


@dataclass(frozen=True, slots=True)
class ModelRate:
    """What one unit of a model's usage costs, in tokens, before the multiplier."""

    model: str
    input_tokens_per_unit: Decimal
    output_tokens_per_unit: Decimal
    image_tokens: int | None = None
    source: RateSource = "shipped"


def _shipped(model: str, image_tokens: int | None = None) -> ModelRate:
    return ModelRate(model, Decimal(1), Decimal(1), image_tokens)


SHIPPED_MODEL_RATES: Mapping[str, ModelRate] = MappingProxyType(
    {
        rate.model: rate
        for rate in (
            _shipped(DEFAULT_MODEL, image_tokens=6_000),
            _shipped("dall-e-3", image_tokens=6_000),
            _shipped("dall-e-2", image_tokens=3_000),
            _shipped("google", image_tokens=4_500),
        )
    }
)


def normalize_model_name(value: object, *, field_name: str = "model") -> str:
    """Model names are compared case-insensitively: ``DALL-E-3`` is ``dall-e-3``."""
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be a string")
    name = value.strip().lower()
    if not 1 <= len(name) <= MAX_MODEL_NAME_LENGTH:
        raise InvalidInput(field_name, f"must be 1 to {MAX_MODEL_NAME_LENGTH} characters")
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            field_name, "must be letters, digits and . _ : / @ + - (a letter or digit first)"
        )
    return name


class RateTable:
    """The shipped rates with the database's overrides laid over them."""

    def __init__(self, overrides: Mapping[str, ModelRate] | None = None) -> None:
        self._rates = {**SHIPPED_MODEL_RATES, **(overrides or {})}
        default = self._rates[DEFAULT_MODEL]
        if default.image_tokens is None:
            # The last resort for an image must have a price: keep the shipped one.
            shipped = SHIPPED_MODEL_RATES[DEFAULT_MODEL].image_tokens
            self._rates[DEFAULT_MODEL] = replace(default, image_tokens=shipped)

    def rate_for(self, model: str | None) -> ModelRate:
        """The model's rate, or the ``default`` row's for an unknown or absent model."""
        if model is not None:
            found = self._rates.get(model.strip().lower())
            if found is not None:
                return found
        return self._rates[DEFAULT_MODEL]

    def all(self) -> list[ModelRate]:
        return [self._rates[name] for name in sorted(self._rates)]
