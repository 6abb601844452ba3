"""Pricing over the database: model rates, global settings, and quotes.

The rates and settings are read on the hot path of every usage charge, so they are
cached in memory: edits made through this process are seen at once, edits made by
another process within ``refresh_seconds`` (as the cost table does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.clock import Clock, system_clock
from tokenbank.config import Settings
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.errors import InvalidInput
from tokenbank.pricing import repository as repo
from tokenbank.pricing.calculator import Profit, Quote, Usage, quote
from tokenbank.pricing.numbers import decimal_text, parse_decimal
from tokenbank.pricing.rates import (
    DEFAULT_TOKEN_MULTIPLIER,
    MAX_IMAGE_TOKENS,
    MAX_RATE_TOKENS_PER_UNIT,
    MAX_TOKEN_MULTIPLIER,
    ModelRate,
    RateTable,
    normalize_model_name,
)
from tokenbank.pricing.rules import PricingRule
from tokenbank.validation import validate_amount

PRICING_CACHE_REFRESH_SECONDS = 5.0
# Keys of the settings table (not secrets: ruff's S105 guesses from "TOKEN").
TOKEN_MULTIPLIER_KEY = "token_multiplier"  # noqa: S105
TOKENS_PER_USD_KEY = "tokens_per_usd"
SETTING_KEYS = (TOKEN_MULTIPLIER_KEY, TOKENS_PER_USD_KEY)


@dataclass(frozen=True, slots=True)
class PricingSettings:
    """Global pricing settings: the multiplier and what a dollar buys (billing defaults,
    docs/compatibility.md)."""

    token_multiplier: Decimal
    tokens_per_usd: int


@dataclass(frozen=True, slots=True)
class _Snapshot:
    rates: RateTable
    settings: PricingSettings
    loaded_at: float


def parse_multiplier(value: object) -> Decimal:
    return parse_decimal(
        value,
        field_name=TOKEN_MULTIPLIER_KEY,
        minimum=Decimal(0),
        maximum=MAX_TOKEN_MULTIPLIER,
        allow_minimum=False,
    )


def parse_rate(value: object, *, field_name: str) -> Decimal:
    return parse_decimal(
        value, field_name=field_name, minimum=Decimal(0), maximum=MAX_RATE_TOKENS_PER_UNIT
    )


class PricingService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        settings: Settings,
        clock: Clock = system_clock,
        refresh_seconds: float = PRICING_CACHE_REFRESH_SECONDS,
    ) -> None:
        self._engine = engine
        self._defaults = PricingSettings(DEFAULT_TOKEN_MULTIPLIER, settings.tokens_per_usd)
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._snapshot: _Snapshot | None = None

    # --- reading -------------------------------------------------------------------------

    async def rates(self) -> RateTable:
        return (await self._current()).rates

    async def settings(self) -> PricingSettings:
        return (await self._current()).settings

    async def list_model_rates(self) -> list[ModelRate]:
        return (await self._current()).rates.all()

    async def quote(
        self, rule: PricingRule, usage: Usage, *, model: str | None, profit: Profit
    ) -> Quote:
        snapshot = await self._current()
        return quote(
            rule,
            usage,
            model=model,
            rates=snapshot.rates,
            token_multiplier=snapshot.settings.token_multiplier,
            profit=profit,
        )

    # --- editing -------------------------------------------------------------------------

    async def set_model_rate(
        self,
        model: str,
        *,
        input_tokens_per_unit: object,
        output_tokens_per_unit: object,
        image_tokens: int | None = None,
    ) -> ModelRate:
        """Override (or add) one model's rates; the shipped row returns on delete."""
        name = normalize_model_name(model)
        input_rate = parse_rate(input_tokens_per_unit, field_name="input_tokens_per_unit")
        output_rate = parse_rate(output_tokens_per_unit, field_name="output_tokens_per_unit")
        if image_tokens is not None:
            validate_amount(image_tokens, field_name="image_tokens")
            if image_tokens > MAX_IMAGE_TOKENS:
                raise InvalidInput("image_tokens", f"must be at most {MAX_IMAGE_TOKENS}")
        async with write_transaction(self._engine) as conn:
            await repo.upsert_model_price(
                conn,
                model=name,
                input_tokens_per_unit=decimal_text(input_rate),
                output_tokens_per_unit=decimal_text(output_rate),
                image_tokens=image_tokens,
                now=self._clock(),
            )
        self._snapshot = None
        return ModelRate(name, input_rate, output_rate, image_tokens, "database")

    async def delete_model_rate(self, model: str) -> bool:
        """Remove a model's override; False when it had none."""
        name = normalize_model_name(model)
        async with write_transaction(self._engine) as conn:
            deleted = await repo.delete_model_price(conn, name)
        self._snapshot = None
        return deleted

    async def update_settings(
        self, *, token_multiplier: object = None, tokens_per_usd: object = None
    ) -> PricingSettings:
        """Change the given settings (None leaves one as it is)."""
        changes: dict[str, object] = {}
        if token_multiplier is not None:
            changes[TOKEN_MULTIPLIER_KEY] = decimal_text(parse_multiplier(token_multiplier))
        if tokens_per_usd is not None:
            changes[TOKENS_PER_USD_KEY] = validate_amount(
                tokens_per_usd, field_name=TOKENS_PER_USD_KEY
            )
        if changes:
            now = self._clock()
            async with write_transaction(self._engine) as conn:
                for key, value in changes.items():
                    await repo.upsert_setting(conn, key, value, now)
            self._snapshot = None
        return await self.settings()

    # --- the cache -----------------------------------------------------------------------

    async def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.loaded_at > self._refresh_seconds:
            async with read_transaction(self._engine) as conn:
                snapshot = await self._load(conn)
            self._snapshot = snapshot
        return snapshot

    async def _load(self, conn: AsyncConnection) -> _Snapshot:
        overrides = {
            row.model: ModelRate(
                row.model,
                Decimal(row.input_tokens_per_unit),
                Decimal(row.output_tokens_per_unit),
                row.image_tokens,
                "database",
            )
            for row in await repo.model_price_rows(conn)
        }
        stored = await repo.setting_values(conn, SETTING_KEYS)
        multiplier = stored.get(TOKEN_MULTIPLIER_KEY)
        per_usd = stored.get(TOKENS_PER_USD_KEY)
        settings = PricingSettings(
            token_multiplier=self._defaults.token_multiplier
            if multiplier is None
            else parse_multiplier(multiplier),
            tokens_per_usd=self._defaults.tokens_per_usd
            if per_usd is None
            else validate_amount(per_usd, field_name=TOKENS_PER_USD_KEY),
        )
        return _Snapshot(RateTable(overrides), settings, time.monotonic())
