"""Pricing: rules that turn usage into tokens, model rates, multiplier, profit, rounding.

See :mod:`tokenbank.pricing.calculator` for the formula and the one rounding rule.
"""

from tokenbank.pricing.calculator import (
    ROUNDING,
    ROUNDING_RULE,
    Profit,
    Quote,
    Usage,
    apply_profit,
    quote,
    round_cost,
)
from tokenbank.pricing.rates import (
    DEFAULT_MODEL,
    DEFAULT_TOKEN_MULTIPLIER,
    SHIPPED_MODEL_RATES,
    ModelRate,
    RateTable,
)
from tokenbank.pricing.rules import (
    SEED_001_RULE,
    FixedRule,
    ImageRule,
    OutputRatioRule,
    PerUnitRule,
    PricingRule,
    parse_rule,
    rule_json,
)
from tokenbank.pricing.service import PricingService, PricingSettings

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TOKEN_MULTIPLIER",
    "ROUNDING",
    "ROUNDING_RULE",
    "SEED_001_RULE",
    "SHIPPED_MODEL_RATES",
    "FixedRule",
    "ImageRule",
    "ModelRate",
    "OutputRatioRule",
    "PerUnitRule",
    "PricingRule",
    "PricingService",
    "PricingSettings",
    "Profit",
    "Quote",
    "RateTable",
    "Usage",
    "apply_profit",
    "parse_rule",
    "quote",
    "round_cost",
    "rule_json",
]
