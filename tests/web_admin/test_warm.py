"""A process that starts adds up the settled ledger for the dashboard in the background,
so that the first admin visit after a deploy finds the sums ready."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.config import Settings
from tokenbank.web import admin_reads


async def test_starting_the_app_keeps_the_settled_sums(
    database_url: str, clock: ManualClock
) -> None:
    settings = Settings(database_url=database_url, welcome_bonus_tokens=0)
    async with TokenService(database_url, settings=settings, clock=clock, auto_migrate=False) as tb:
        await tb.open_wallet("bob")
        await tb.credit("bob", amount=1_000, operation_type="bonus")
        await tb.debit("bob", amount=300)
        clock.advance(timedelta(seconds=admin_reads.SETTLE_SECONDS + 1))
        engine = await tb.engine()
        admin_reads._kept.pop(engine, None)
        app = create_app(settings, token_service=tb, clock=clock)
        async with app.router.lifespan_context(app):
            for _ in range(200):  # the warm-up runs in the background: wait for it
                if engine in admin_reads._kept:
                    break
                await asyncio.sleep(0.01)
            kept = admin_reads._kept[engine]
    assert kept.flows["tokens_consumed"] == [300, 0]
    assert kept.entries == 4  # two transactions of two entries
