"""The pricing arithmetic: exact decimals, one rounding, and the record of both.

For a rule, a usage and a model::

    fixed:         base = tokens
    output_ratio:  base = output_units / ratio                       (Token Process dialect)
    per_unit:      base = (input_units * input_rate(model)
                           + output_units * output_rate(model)) * token_multiplier
    image:         base = image_tokens(model)

    exact = base + base * profit_percent / 100                       (Token Process dialect)
    cost  = exact rounded up to a whole token (ROUND_CEILING), once

Everything is ``decimal.Decimal`` (never float) in an 80-digit context whose
inexact steps round up, so the one rounding never under-charges and over-charges
by less than one token: ``exact <= cost < exact + 1``. The token multiplier (seed
004, 1.5 by default) applies to ``per_unit`` only; the profit percentage (the
feature's, else the plan's, else 0) applies to every rule. The exact cost, the
rule, its ``pricing_version`` and every input are kept in :meth:`Quote.record`,
which goes onto the ledger transaction so that a charge can be explained later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from typing import Any, Literal

from tokenbank.config import MAX_AMOUNT_TOKENS
from tokenbank.errors import InvalidInput
from tokenbank.pricing.numbers import PRICING_CONTEXT, decimal_text
from tokenbank.pricing.rates import ModelRate, RateTable
from tokenbank.pricing.rules import (
    FixedRule,
    ImageRule,
    OutputRatioRule,
    PerUnitRule,
    PricingRule,
    rule_json,
)

ROUNDING = ROUND_CEILING
ROUNDING_RULE = "ceiling: the exact cost rounded up to a whole token, once, after profit"
HUNDRED = Decimal(100)

ProfitSource = Literal["feature", "plan", "none"]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a call used: LLM input and output tokens (or other units)."""

    input_units: int = 0
    output_units: int = 0

    def __post_init__(self) -> None:
        for name in ("input_units", "output_units"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(name, "must be a whole number")
            if not 0 <= value <= MAX_AMOUNT_TOKENS:
                raise InvalidInput(name, f"must be from 0 to {MAX_AMOUNT_TOKENS}")

    @property
    def is_zero(self) -> bool:
        return self.input_units == 0 and self.output_units == 0


@dataclass(frozen=True, slots=True)
class Profit:
    percent: Decimal = Decimal(0)
    source: ProfitSource = "none"


@dataclass(frozen=True, slots=True)
class Quote:
    """A priced usage: the whole-token cost and how it was reached."""

    cost_tokens: int
    exact_cost: Decimal
    base_cost: Decimal
    rule: PricingRule
    usage: Usage
    profit: Profit
    model: str | None
    rate: ModelRate | None
    token_multiplier: Decimal | None

    def record(self, **context: Any) -> dict[str, Any]:
        """The JSON kept on the ledger transaction (decimals as exact strings)."""
        record: dict[str, Any] = {
            **context,
            "rule": rule_json(self.rule),
            "model": self.model,
            "usage": {
                "input_units": self.usage.input_units,
                "output_units": self.usage.output_units,
            },
            "base_cost": decimal_text(self.base_cost),
            "profit_percent": decimal_text(self.profit.percent),
            "profit_source": self.profit.source,
            "exact_cost": decimal_text(self.exact_cost),
            "rounding": ROUNDING_RULE,
            "cost_tokens": self.cost_tokens,
        }
        if self.token_multiplier is not None:
            record["token_multiplier"] = decimal_text(self.token_multiplier)
        if self.rate is not None:
            record["rate"] = _rate_json(self.rate, image=isinstance(self.rule, ImageRule))
        return record


def _rate_json(rate: ModelRate, *, image: bool) -> dict[str, Any]:
    if image:
        return {"model": rate.model, "image_tokens": rate.image_tokens, "source": rate.source}
    return {
        "model": rate.model,
        "input_tokens_per_unit": decimal_text(rate.input_tokens_per_unit),
        "output_tokens_per_unit": decimal_text(rate.output_tokens_per_unit),
        "source": rate.source,
    }


def round_cost(exact: Decimal | Fraction) -> int:
    """The one rounding rule: up to a whole token."""
    return math.ceil(Fraction(exact))


def apply_profit(base: Decimal, percent: Decimal) -> Decimal:
    """the Token Process dialect: ``final = base + base * profit% / 100``."""
    ctx = PRICING_CONTEXT
    return ctx.add(base, ctx.divide(ctx.multiply(base, percent), HUNDRED))


def quote(
    rule: PricingRule,
    usage: Usage,
    *,
    model: str | None,
    rates: RateTable,
    token_multiplier: Decimal,
    profit: Profit,
) -> Quote:
    """Price ``usage`` by ``rule``; the cost is refused above the largest amount."""
    base, rate, multiplier, model = _base(rule, usage, model, rates, token_multiplier)
    exact = apply_profit(base, profit.percent)
    cost = round_cost(_exact_fraction(rule, usage, base, profit.percent))
    if cost > MAX_AMOUNT_TOKENS:
        raise InvalidInput("cost", f"{cost} tokens is more than the largest amount allowed")
    return Quote(
        cost_tokens=cost,
        exact_cost=exact,
        base_cost=base,
        rule=rule,
        usage=usage,
        profit=profit,
        model=model,
        rate=rate,
        token_multiplier=multiplier,
    )


def _exact_fraction(rule: PricingRule, usage: Usage, base: Decimal, percent: Decimal) -> Fraction:
    """The cost as an exact rational, for the one ceiling.

    A ratio that does not terminate (output / 3) is rounded up in its 80th digit as a
    Decimal; multiplied by the profit factor, that last digit could lift an exact
    whole number (1000/11 * 11) over it and charge one token too many.
    """
    if isinstance(rule, OutputRatioRule):
        exact_base = Fraction(usage.output_units) / Fraction(rule.ratio)
    else:
        exact_base = Fraction(base)  # sums and products of bounded inputs: exact
    return exact_base * (1 + Fraction(percent) / 100)


def _base(
    rule: PricingRule,
    usage: Usage,
    model: str | None,
    rates: RateTable,
    token_multiplier: Decimal,
) -> tuple[Decimal, ModelRate | None, Decimal | None, str | None]:
    ctx = PRICING_CONTEXT
    if isinstance(rule, FixedRule):
        return Decimal(rule.tokens), None, None, model
    if isinstance(rule, OutputRatioRule):
        return ctx.divide(Decimal(usage.output_units), rule.ratio), None, None, model
    if isinstance(rule, PerUnitRule):
        model = model or rule.model
        rate = rates.rate_for(model)
        units = ctx.add(
            ctx.multiply(Decimal(usage.input_units), rate.input_tokens_per_unit),
            ctx.multiply(Decimal(usage.output_units), rate.output_tokens_per_unit),
        )
        return ctx.multiply(units, token_multiplier), rate, token_multiplier, model
    return _image_base(rule, model, rates)


def _image_base(
    rule: ImageRule, model: str | None, rates: RateTable
) -> tuple[Decimal, ModelRate | None, None, str | None]:
    """The rule's cost for the model, the table's, the rule's default, the table's default."""
    name = model.strip().lower() if model else None
    if name is not None and name in rule.costs:
        return Decimal(rule.costs[name]), None, None, model
    rate = rates.rate_for(name)
    if rate.model != name or rate.image_tokens is None:
        if rule.default_tokens is not None:
            return Decimal(rule.default_tokens), None, None, model
        rate = rates.rate_for(None)
    return Decimal(rate.image_tokens or 0), rate, None, model
