"""Worked examples: a story per operation, balances checked after every step."""

from __future__ import annotations

import pytest

from tokenbank import ErrorCode, ManualClock, TokenService


async def test_open_wallet_grants_welcome_bonus_once(database_url: str) -> None:
    async with TokenService(database_url, welcome_bonus_tokens=10_000) as service:
        first = await service.open_wallet("alice")
        again = await service.open_wallet("alice")
        assert (first.created, first.new_balance, first.welcome_bonus_tokens) == (
            True,
            10_000,
            10_000,
        )
        assert (again.created, again.new_balance, again.welcome_bonus_tokens) == (False, 10_000, 0)
        entries = await service.get_ledger().get_user_entries("alice")
        assert [(e.operation_type, e.tokens_amount) for e in entries] == [("bonus", 10_000)]
        assert (await service.audit()).ok


async def test_credit_debit_refund_story(service: TokenService) -> None:
    await service.open_wallet("bob")
    bought = await service.credit("bob", amount=500, operation_type="purchase")
    assert bought.success and bought.new_balance == 500

    charged = await service.charge_for_operation("bob", "image_generation")
    assert charged.success and charged.new_balance == 490

    used = await service.debit("bob", amount=90, operation_type="usage")
    assert used.new_balance == 400

    refunded = await service.refund("bob", 40, refund_of=used.transaction_id)
    assert refunded.success and refunded.new_balance == 440

    too_much = await service.refund("bob", 51, refund_of=used.transaction_id)
    assert too_much.error_code == ErrorCode.REFUND_EXCEEDS_DEBIT
    assert too_much.available_tokens == 50

    balance = await service.get_balance("bob")
    assert balance is not None
    assert (balance.tokens_balance, balance.tokens_spent, balance.available) == (440, 60, 440)
    stats = await service.get_ledger().get_user_statistics("bob")
    assert (stats.total_spent, stats.total_earned, stats.net_change, stats.operation_count) == (
        100,
        540,
        440,
        4,
    )
    assert (await service.audit()).ok


async def test_debit_refuses_overspend_and_writes_nothing(service: TokenService) -> None:
    await service.open_wallet("carol")
    await service.credit("carol", amount=10, operation_type="admin_grant")
    refused = await service.debit("carol", amount=11)
    assert not refused.success
    assert refused.error_code == ErrorCode.INSUFFICIENT_TOKENS
    assert (refused.available_tokens, refused.required_tokens) == (10, 11)
    assert len(await service.get_ledger().get_user_entries("carol")) == 1
    unknown = await service.debit("nobody", amount=1)
    assert unknown.error_code == ErrorCode.WALLET_NOT_FOUND


async def test_hold_capture_less_releases_the_rest(service: TokenService) -> None:
    await service.open_wallet("dave")
    await service.credit("dave", amount=100)
    hold = await service.hold("dave", 60, ttl_seconds=60)
    assert hold.success and hold.available_tokens == 40
    assert (await service.debit("dave", amount=41)).error_code == ErrorCode.INSUFFICIENT_TOKENS

    assert hold.hold_id is not None
    captured = await service.capture(hold.hold_id, 25)
    assert captured.success and captured.status == "captured"
    assert (captured.new_balance, captured.available_tokens) == (75, 75)
    again = await service.capture(hold.hold_id, 25)
    assert again.replayed and again.ledger_entry_id == captured.ledger_entry_id
    assert (await service.capture(hold.hold_id, 30)).error_code == ErrorCode.HOLD_NOT_PENDING
    assert (await service.audit()).ok


async def test_capture_more_than_held_overdraws_and_suspends(service: TokenService) -> None:
    await service.open_wallet("erin")
    await service.credit("erin", amount=50)
    hold = await service.hold("erin", 40, ttl_seconds=60)
    assert hold.hold_id is not None
    captured = await service.capture(hold.hold_id, 70)
    assert captured.success and captured.new_balance == -20
    balance = await service.get_balance("erin")
    assert balance is not None and balance.status == "suspended"
    assert (await service.debit("erin", amount=1)).error_code == ErrorCode.WALLET_SUSPENDED

    await service.credit("erin", amount=20)
    balance = await service.get_balance("erin")
    assert balance is not None and (balance.status, balance.tokens_balance) == ("active", 0)
    assert (await service.audit()).ok


async def test_void_and_expiry_release_holds(service: TokenService, clock: ManualClock) -> None:
    await service.open_wallet("fay")
    await service.credit("fay", amount=100)
    voided = await service.hold("fay", 30, ttl_seconds=60)
    expiring = await service.hold("fay", 50, ttl_seconds=10)
    assert voided.hold_id and expiring.hold_id
    assert (await service.void(voided.hold_id)).status == "voided"
    assert (await service.void(voided.hold_id)).replayed

    clock.advance(11)
    assert (await service.capture(expiring.hold_id, 5)).error_code == ErrorCode.HOLD_EXPIRED
    assert await service.release_expired_holds() == 1
    balance = await service.get_balance("fay")
    assert balance is not None and (balance.held, balance.available) == (0, 100)
    hold = await service.get_hold(expiring.hold_id)
    assert hold is not None and hold.status == "expired"
    assert (await service.audit()).ok


async def test_idempotency_key_replays_and_conflicts(service: TokenService) -> None:
    from tokenbank import IdempotencyConflict

    await service.open_wallet("gus")
    await service.credit("gus", amount=100)
    first = await service.debit("gus", amount=30, idempotency_key="req-1")
    second = await service.debit("gus", amount=30, idempotency_key="req-1", metadata={"retry": 1})
    assert second.replayed
    assert (second.ledger_entry_id, second.new_balance) == (first.ledger_entry_id, 70)
    with pytest.raises(IdempotencyConflict):
        await service.debit("gus", amount=31, idempotency_key="req-1")
    other_scope = await service.debit(
        "gus", amount=30, idempotency_key="req-1", idempotency_scope="app-2"
    )
    assert not other_scope.replayed and other_scope.new_balance == 40
    balance = await service.get_balance("gus")
    assert balance is not None and balance.tokens_balance == 40
