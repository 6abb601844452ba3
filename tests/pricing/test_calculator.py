"""The pricing arithmetic: seed examples, then properties checked by Hypothesis.

The reference for every property is exact rational arithmetic (``fractions``): the
decimal computation must agree with it, round up exactly once, and never go down
when usage goes up.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbank import InvalidInput
from tokenbank.pricing import (
    DEFAULT_TOKEN_MULTIPLIER,
    SEED_001_RULE,
    FixedRule,
    ImageRule,
    ModelRate,
    OutputRatioRule,
    PerUnitRule,
    PricingRule,
    Profit,
    RateTable,
    Usage,
    parse_rule,
    quote,
)

MODEL = "model-x"


def price(
    rule: PricingRule,
    usage: Usage,
    *,
    profit: str = "0",
    model: str | None = None,
    rates: RateTable | None = None,
    multiplier: Decimal = DEFAULT_TOKEN_MULTIPLIER,
) -> int:
    return quote(
        rule,
        usage,
        model=model,
        rates=rates or RateTable(),
        token_multiplier=multiplier,
        profit=Profit(Decimal(profit), "plan"),
    ).cost_tokens


# --- the seeds' numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_token", "profit", "cost"),
    [
        (40, "0", 10),  # the Token Process dialect: base = 40 / 4
        (40, "20", 12),  # final = 10 + 10 * 20 / 100
        (4, "0", 1),
        (1, "0", 1),  # 0.25 rounds up: never under-charge
        (0, "50", 0),
        (1_000, "12.5", 282),  # 250 * 1.125 = 281.25 -> 282
    ],
)
def test_seed_001_output_ratio_examples(output_token: int, profit: str, cost: int) -> None:
    assert price(SEED_001_RULE, Usage(10, output_token), profit=profit) == cost


def test_seed_004_defaults() -> None:
    # "Balance decreases by billable amount (e.g., 7,500 tokens for 5,000 actual)".
    assert price(PerUnitRule(), Usage(2_000, 3_000), model="gpt-4o") == 7_500
    image = ImageRule()
    assert price(image, Usage(0, 1), model="dall-e-3") == 6_000
    assert price(image, Usage(0, 1), model="dall-e-2") == 3_000
    assert price(image, Usage(0, 1), model="Google") == 4_500
    assert price(image, Usage(0, 1), model="unknown") == 6_000  # the default row
    assert price(image, Usage(0, 1)) == 6_000
    assert price(ImageRule(default_tokens=700), Usage(0, 1), model="unknown") == 700
    assert price(ImageRule(default_tokens=700), Usage(0, 1), model="dall-e-2") == 3_000
    assert price(ImageRule(costs={"dall-e-2": 10}), Usage(0, 1), model="DALL-E-2") == 10


def test_the_multiplier_applies_to_per_unit_only() -> None:
    usage = Usage(100, 100)
    for multiplier in (Decimal(1), Decimal(3)):
        assert price(FixedRule(tokens=10), usage, multiplier=multiplier) == 10
        assert price(SEED_001_RULE, usage, multiplier=multiplier) == 25
        assert price(ImageRule(), usage, model="dall-e-2", multiplier=multiplier) == 3_000
    assert price(PerUnitRule(), usage, multiplier=Decimal(3)) == 600


def test_an_override_without_an_image_cost_keeps_a_default_image_price() -> None:
    rates = RateTable({"default": ModelRate("default", Decimal(2), Decimal(2), None, "database")})
    assert price(ImageRule(), Usage(0, 1), model="unknown", rates=rates) == 6_000
    assert price(PerUnitRule(), Usage(1, 1), rates=rates) == 6  # (2 + 2) * 1.5


def test_a_cost_above_the_largest_amount_is_refused() -> None:
    with pytest.raises(InvalidInput, match="largest amount"):
        price(FixedRule(tokens=10**12), Usage(), profit="1")


def test_the_record_keeps_the_exact_cost_and_the_rule() -> None:
    priced = quote(
        OutputRatioRule(ratio=Decimal(3)),
        Usage(0, 10),
        model=None,
        rates=RateTable(),
        token_multiplier=DEFAULT_TOKEN_MULTIPLIER,
        profit=Profit(Decimal(0), "none"),
    )
    record = priced.record(feature_endpoint_id="f", pricing_version=3)
    assert record["cost_tokens"] == 4
    assert record["exact_cost"].startswith("3.3333333333")
    assert (record["feature_endpoint_id"], record["pricing_version"]) == ("f", 3)
    assert record["rule"] == {"type": "output_ratio", "ratio": "3"}
    assert "ceiling" in record["rounding"]


# --- properties ------------------------------------------------------------------------------

units = st.integers(min_value=0, max_value=10**12)
decimals = st.decimals(
    min_value=Decimal("0.001"), max_value=Decimal(10_000), places=3, allow_nan=False
)
rates_st = st.decimals(min_value=Decimal(0), max_value=Decimal(1_000), places=6, allow_nan=False)
profits = st.decimals(min_value=Decimal(0), max_value=Decimal(1_000), places=2, allow_nan=False)
rules: st.SearchStrategy[PricingRule] = st.one_of(
    st.builds(FixedRule, tokens=st.integers(min_value=0, max_value=10**6)),
    st.builds(OutputRatioRule, ratio=decimals),
    st.builds(PerUnitRule, model=st.just(MODEL)),
    st.builds(ImageRule, default_tokens=st.none() | st.integers(min_value=1, max_value=10**6)),
)


@st.composite
def rate_tables(draw: st.DrawFn) -> RateTable:
    rate = ModelRate(MODEL, draw(rates_st), draw(rates_st), draw(st.none() | st.integers(1, 10**6)))
    return RateTable({MODEL: rate})


def reference(
    rule: PricingRule, usage: Usage, rates: RateTable, multiplier: Decimal, profit: Decimal
) -> Fraction:
    """The exact cost, in rationals, straight from the documented formula."""
    if isinstance(rule, FixedRule):
        base = Fraction(rule.tokens)
    elif isinstance(rule, OutputRatioRule):
        base = Fraction(usage.output_units) / Fraction(rule.ratio)
    elif isinstance(rule, PerUnitRule):
        rate = rates.rate_for(MODEL)
        units = usage.input_units * Fraction(rate.input_tokens_per_unit) + (
            usage.output_units * Fraction(rate.output_tokens_per_unit)
        )
        base = units * Fraction(multiplier)
    else:
        rate = rates.rate_for(MODEL)
        if rate.image_tokens is not None:
            base = Fraction(rate.image_tokens)
        else:
            base = Fraction(rule.default_tokens or rates.rate_for(None).image_tokens or 0)
    return base + base * Fraction(profit) / 100


@settings(max_examples=300, deadline=None)
@given(
    rule=rules,
    usage=st.builds(Usage, units, units),
    rates=rate_tables(),
    multiplier=decimals,
    profit=profits,
)
def test_cost_is_the_exact_formula_rounded_up_once(
    rule: PricingRule, usage: Usage, rates: RateTable, multiplier: Decimal, profit: Decimal
) -> None:
    exact = reference(rule, usage, rates, multiplier, profit)
    try:
        priced = quote(
            rule,
            usage,
            model=MODEL,
            rates=rates,
            token_multiplier=multiplier,
            profit=Profit(profit, "plan"),
        )
    except InvalidInput:
        assert math.ceil(exact) > 10**12
        return
    # Never negative, never under-charged, at most one token over.
    assert priced.cost_tokens >= 0
    assert priced.cost_tokens == math.ceil(exact)
    assert exact <= priced.cost_tokens < exact + 1
    # The recorded exact cost is the exact cost (or, for a ratio that does not
    # terminate, rounded up in the 80th digit, which cannot change the ceiling).
    assert Fraction(priced.exact_cost) >= exact
    assert Fraction(priced.exact_cost) - exact < Fraction(1, 10**40)


@settings(max_examples=300, deadline=None)
@given(
    rule=rules,
    rates=rate_tables(),
    small=st.tuples(units, units),
    extra=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
    profit=profits,
)
def test_cost_never_goes_down_when_usage_goes_up(
    rule: PricingRule,
    rates: RateTable,
    small: tuple[int, int],
    extra: tuple[int, int],
    profit: Decimal,
) -> None:
    smaller = Usage(small[0] // 1_000, small[1] // 1_000)
    larger = Usage(smaller.input_units + extra[0], smaller.output_units + extra[1])
    options: dict[str, Any] = {
        "model": MODEL,
        "rates": rates,
        "token_multiplier": DEFAULT_TOKEN_MULTIPLIER,
        "profit": Profit(profit, "plan"),
    }
    try:
        low = quote(rule, smaller, **options)
    except InvalidInput:
        # Above the largest amount already: more usage must be refused too.
        with pytest.raises(InvalidInput, match="largest amount"):
            quote(rule, larger, **options)
        return
    try:
        high = quote(rule, larger, **options)
    except InvalidInput:
        return  # above the largest amount: refused, which is not cheaper
    assert low.exact_cost <= high.exact_cost
    assert low.cost_tokens <= high.cost_tokens


@settings(max_examples=200, deadline=None)
@given(
    usage=st.builds(Usage, st.integers(0, 10**9), st.integers(0, 10**9)),
    low=profits,
    high=profits,
)
def test_more_profit_never_costs_less(usage: Usage, low: Decimal, high: Decimal) -> None:
    low, high = min(low, high), max(low, high)
    assert price(SEED_001_RULE, usage, profit=str(low)) <= price(
        SEED_001_RULE, usage, profit=str(high)
    )


# --- rules as JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "must be an object"),
        ({"tokens": 5}, "type must be one of"),
        ({"type": "fixed"}, "tokens"),
        ({"type": "fixed", "tokens": -1}, "tokens"),
        ({"type": "fixed", "tokens": 2.0}, "tokens"),
        ({"type": "fixed", "tokens": True}, "tokens"),
        ({"type": "fixed", "tokens": 1, "surprise": 1}, "surprise"),
        ({"type": "output_ratio", "ratio": 0.25}, "not a float"),
        ({"type": "output_ratio", "ratio": "0"}, "more than 0"),
        ({"type": "output_ratio", "ratio": "NaN"}, "finite"),
        ({"type": "output_ratio", "ratio": "1e400"}, "ratio"),
        ({"type": "output_ratio", "ratio": "0.0000000000001"}, "decimal places"),
        ({"type": "per_unit", "model": "has space"}, "model"),
        ({"type": "image", "costs": {"dall-e-3": 0}}, "costs"),
        ({"type": "image", "costs": "dall-e-3"}, "costs"),
    ],
)
def test_malformed_rules_are_invalid_input(data: object, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parse_rule(data)


def test_rules_round_trip_through_json() -> None:
    for data in (
        {"type": "fixed", "tokens": 0},
        {"type": "output_ratio", "ratio": "2.5"},
        {"type": "per_unit", "model": "gpt-4o"},
        {"type": "image", "default_tokens": 100, "costs": {"dall-e-3": 5}},
    ):
        rule = parse_rule(data)
        assert parse_rule(rule.model_dump(mode="json")) == rule
    assert parse_rule({"type": "output_ratio"}) == SEED_001_RULE
    assert parse_rule({"type": "image", "costs": {"DALL-E-3": 5}}).costs == {"dall-e-3": 5}  # type: ignore[union-attr]


def test_a_ratio_that_does_not_terminate_is_not_rounded_up_twice() -> None:
    # 1000 / 11 as a Decimal is rounded up in its 80th digit; times 11 (a 1000%
    # profit) that digit would make 1000.000...01 and charge 1001.
    priced = quote(
        OutputRatioRule(ratio=Decimal(11)),
        Usage(0, 1_000),
        model=None,
        rates=RateTable(),
        token_multiplier=DEFAULT_TOKEN_MULTIPLIER,
        profit=Profit(Decimal(1_000), "plan"),
    )
    assert priced.cost_tokens == 1_000
