"""Pricing rules: how a feature turns usage into a base cost, stored as JSON.

Four rules, each a validated model with a ``type`` tag:

``fixed`` ``{"type": "fixed", "tokens": 25}``
    The same cost for every call (0 makes the feature free).
``output_ratio`` ``{"type": "output_ratio", "ratio": 4}``
    the Token Process dialect's rule: ``base = output_token / ratio`` (the seed's ratio is 4).
``per_unit`` ``{"type": "per_unit", "model": "gpt-4o"}``
    ``base = (input * input rate + output * output rate) * token multiplier``, with
    the rates of the request's model (or the rule's ``model`` when the request names
    none) from the model price table. Only this rule applies the billing defaults' global token
    multiplier (1.5 by default).
``image`` ``{"type": "image", "default_tokens": 5000, "costs": {"my-model": 800}}``
    A fixed cost per call by model: the rule's ``costs``, else the model price table
    (DALL-E 3 6,000, DALL-E 2 3,000, Google 4,500), else the rule's
    ``default_tokens``, else the table's ``default`` row (6,000).

The profit percentage (the feature's, else the plan's) and the one rounding are
applied on top of every rule; see :mod:`tokenbank.pricing.calculator`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from tokenbank.config import MAX_AMOUNT_TOKENS
from tokenbank.errors import InvalidInput
from tokenbank.pricing.numbers import parse_decimal
from tokenbank.pricing.rates import MAX_IMAGE_TOKENS, normalize_model_name

SEED_001_OUTPUT_RATIO = Decimal(4)
MAX_OUTPUT_RATIO = Decimal(1_000_000_000)
MAX_IMAGE_COSTS_PER_RULE = 100
MAX_RULE_JSON_BYTES = 8_192


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedRule(_Rule):
    type: Literal["fixed"] = "fixed"
    tokens: Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_TOKENS)]


class OutputRatioRule(_Rule):
    type: Literal["output_ratio"] = "output_ratio"
    ratio: Decimal = SEED_001_OUTPUT_RATIO

    @field_validator("ratio", mode="before")
    @classmethod
    def _ratio(cls, value: object) -> Decimal:
        return parse_decimal(
            value,
            field_name="ratio",
            minimum=Decimal(0),
            maximum=MAX_OUTPUT_RATIO,
            allow_minimum=False,
        )


class PerUnitRule(_Rule):
    type: Literal["per_unit"] = "per_unit"
    # The model to price with when a request names none.
    model: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: object) -> str | None:
        return None if value is None else normalize_model_name(value)


class ImageRule(_Rule):
    type: Literal["image"] = "image"
    default_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_IMAGE_TOKENS)] | None = None
    costs: dict[str, Annotated[StrictInt, Field(ge=1, le=MAX_IMAGE_TOKENS)]] = Field(
        default_factory=dict, max_length=MAX_IMAGE_COSTS_PER_RULE
    )

    @field_validator("costs", mode="before")
    @classmethod
    def _costs(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value  # the type check below explains it
        return {normalize_model_name(name, field_name="costs"): n for name, n in value.items()}


PricingRule = Annotated[
    FixedRule | OutputRatioRule | PerUnitRule | ImageRule, Field(discriminator="type")
]
RULE_TYPES = ("fixed", "output_ratio", "per_unit", "image")
_RULE_ADAPTER: TypeAdapter[FixedRule | OutputRatioRule | PerUnitRule | ImageRule] = TypeAdapter(
    PricingRule
)
SEED_001_RULE = OutputRatioRule()


def parse_rule(data: object, *, field_name: str = "rule") -> PricingRule:
    """A rule from its JSON form; anything malformed is InvalidInput naming the problem."""
    if not isinstance(data, dict):
        raise InvalidInput(field_name, f"must be an object with a type: one of {RULE_TYPES}")
    if data.get("type") not in RULE_TYPES:
        raise InvalidInput(field_name, f"type must be one of {RULE_TYPES}")
    try:
        return _RULE_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise InvalidInput(field_name, _summarize(error)) from None


def rule_json(rule: PricingRule) -> dict[str, Any]:
    """The rule as stored and shown: decimals as strings, defaults spelled out."""
    return rule.model_dump(mode="json")


def _summarize(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ()) if part not in RULE_TYPES)
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if location and not message.startswith(f"{location}: "):
            message = f"{location}: {message}"
        parts.append(message)
    return "; ".join(parts)
