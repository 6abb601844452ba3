"""PricingService over a real database: shipped rates, overrides, settings, cache."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenbank import InvalidInput, TokenService
from tokenbank.config import Settings
from tokenbank.pricing import PerUnitRule, PricingService, Profit, Usage


async def test_rates_and_settings_are_overridable_and_shared(service: TokenService) -> None:
    engine = await service.engine()
    pricing = PricingService(engine, settings=Settings(tokens_per_usd=20_000), clock=service.clock)
    other_process = PricingService(engine, settings=Settings(), refresh_seconds=0)

    settings = await pricing.settings()
    assert (settings.token_multiplier, settings.tokens_per_usd) == (Decimal("1.5"), 20_000)
    shipped = {rate.model: rate for rate in await pricing.list_model_rates()}
    assert set(shipped) == {"default", "dall-e-2", "dall-e-3", "google"}
    assert {rate.source for rate in shipped.values()} == {"shipped"}

    rate = await pricing.set_model_rate(
        "GPT-4o", input_tokens_per_unit="0.5", output_tokens_per_unit=2, image_tokens=None
    )
    assert (rate.model, rate.input_tokens_per_unit, rate.source) == (
        "gpt-4o",
        Decimal("0.5"),
        "database",
    )
    await pricing.set_model_rate(
        "dall-e-3", input_tokens_per_unit=1, output_tokens_per_unit=1, image_tokens=5_000
    )
    await pricing.update_settings(token_multiplier="2.25", tokens_per_usd=12_345)

    # Another process sees the database's values (after its refresh interval).
    rates = await other_process.rates()
    assert rates.rate_for("gpt-4o").output_tokens_per_unit == Decimal(2)
    assert rates.rate_for("dall-e-3").image_tokens == 5_000
    assert rates.rate_for("unheard-of").model == "default"
    assert (await other_process.settings()).token_multiplier == Decimal("2.25")
    assert (await other_process.settings()).tokens_per_usd == 12_345
    quoted = await other_process.quote(
        PerUnitRule(), Usage(10, 10), model="gpt-4o", profit=Profit()
    )
    assert quoted.cost_tokens == 57  # (5 + 20) * 2.25 = 56.25 -> 57

    # Deleting an override brings the shipped row back.
    assert await pricing.delete_model_rate("dall-e-3") is True
    assert await pricing.delete_model_rate("dall-e-3") is False
    assert (await pricing.rates()).rate_for("dall-e-3").image_tokens == 6_000


BAD_RATES: list[tuple[dict[str, object], str]] = [
    ({"model": "x", "input_tokens_per_unit": 0.5, "output_tokens_per_unit": 1}, "input"),
    ({"model": "x", "input_tokens_per_unit": "-1", "output_tokens_per_unit": 1}, "input"),
    ({"model": "x", "input_tokens_per_unit": 1, "output_tokens_per_unit": "10000000"}, "output"),
    ({"model": "", "input_tokens_per_unit": 1, "output_tokens_per_unit": 1}, "model"),
    ({"model": "a b", "input_tokens_per_unit": 1, "output_tokens_per_unit": 1}, "model"),
    (
        {"model": "x", "input_tokens_per_unit": 1, "output_tokens_per_unit": 1, "image_tokens": 0},
        "image_tokens",
    ),
]


async def test_bad_rates_and_settings_are_refused_and_change_nothing(
    service: TokenService,
) -> None:
    pricing = PricingService(await service.engine(), settings=Settings())
    for call, field in BAD_RATES:
        arguments = dict(call)
        model = arguments.pop("model")
        with pytest.raises(InvalidInput) as raised:
            await pricing.set_model_rate(model, **arguments)  # type: ignore[arg-type]
        assert raised.value.field.startswith(field)
    assert {rate.source for rate in await pricing.list_model_rates()} == {"shipped"}
    for bad in ({"token_multiplier": "0"}, {"token_multiplier": 1.5}, {"tokens_per_usd": 0}):
        with pytest.raises(InvalidInput):
            await pricing.update_settings(**bad)
    assert (await pricing.settings()).token_multiplier == Decimal("1.5")
