"""The token process embedded (no HTTP), and what it relies on in the ledger."""

from __future__ import annotations

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.plans import PlanService
from tokenbank.pricing import PricingService, Usage
from tokenbank.process import TokenProcess


async def test_embedded_start_and_end_in_hold_mode(service: TokenService) -> None:
    engine = await service.engine()
    plans = PlanService(engine, clock=service.clock)
    process = TokenProcess(service, plans, PricingService(engine, settings=Settings()))
    await plans.create_feature("chat", name="Chat", rule={"type": "per_unit"}, hold_tokens=100)
    await plans.create_plan("basic", profit_percent="10", features=["chat"])
    await service.open_wallet("u1")
    await service.credit("u1", amount=150, operation_type="purchase")
    await plans.set_user_plan("u1", "basic")

    started = await process.start("u1", "chat", idempotency_key="job-1", idempotency_scope="app")
    assert started.accessible and started.available_tokens == 50 and started.hold_id
    refused = await process.start("u1", "chat")
    assert not refused.accessible and refused.hold_id is None

    # The plan may change between start and end: the usage is still recorded.
    await plans.remove_feature_from_plan("basic", "chat")
    ended = await process.end(
        "u1", "chat", Usage(20, 40), idempotency_key="job-1", idempotency_scope="app"
    )
    # (20 + 40) * 1.5 = 90, plus 10% = 99
    assert (ended.cost_tokens, ended.balance_tokens, ended.overdrawn) == (99, 51, False)
    assert ended.hold_id == started.hold_id
    balance = await service.get_balance("u1")
    assert balance is not None and (balance.held, balance.available) == (0, 51)
    assert (await service.audit()).ok


async def test_an_overdraft_debit_ignores_expired_holds(
    service: TokenService, clock: ManualClock
) -> None:
    await service.open_wallet("u1")
    await service.credit("u1", amount=60, operation_type="purchase")
    await service.hold("u1", 50, ttl_seconds=60)
    clock.advance(120)  # the hold has expired; no sweep has run
    result = await service.debit("u1", amount=20, allow_overdraft=True)
    assert result.success
    balance = await service.get_balance("u1")
    assert balance is not None
    # 60 - 20 = 40 covers the charge: the expired hold must not suspend the wallet.
    assert (balance.tokens_balance, balance.held, balance.status) == (40, 0, "active")
