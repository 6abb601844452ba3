"""Refunds and disputes take back only what is left of that purchase's grant; the
rest is recorded as lost, never taken from other grants (both engines)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from tests.payments.support import event, pay_intent, payment_service, signed
from tokenbank.ledger.service import TokenService
from tokenbank.payments.service import PaymentService
from tokenbank.testing.localstripe import LocalStripe

STARTER_TOKENS = 150_000  # for 1,500 cents
BONUS_TOKENS = 5_000


@pytest.fixture
async def payments(
    service: TokenService, localstripe: LocalStripe
) -> AsyncIterator[PaymentService]:
    payments = await payment_service(service, localstripe.api_base)
    await (await payments.packs()).seed_defaults()
    await service.open_wallet("alice")
    await service.credit("alice", amount=BONUS_TOKENS, operation_type="bonus")
    yield payments
    await payments.aclose()


async def deliver(payments: PaymentService, event_type: str, obj: dict[str, Any]) -> str:
    body, header = signed(event(event_type, obj))
    return (await payments.take_webhook(body, header)).outcome


async def bought(payments: PaymentService, client: stripe.StripeClient) -> tuple[str, str]:
    """A paid Starter purchase: (purchase id, PaymentIntent id)."""
    order = await payments.order(pack_id="starter", amount_cents=None)
    created = await payments.create_payment_intent("alice", order)
    intent = pay_intent(client, created.payment_intent_id)
    assert await deliver(payments, "payment_intent.succeeded", intent) == "applied"
    return created.purchase_id, created.payment_intent_id


def refunded_charge(client: stripe.StripeClient, intent_id: str, cents: int) -> dict[str, Any]:
    """Refund ``cents`` through Stripe; the charge as charge.refunded carries it."""
    client.v1.refunds.create({"payment_intent": intent_id, "amount": cents})
    intent = client.v1.payment_intents.retrieve(intent_id).to_dict()
    charge = intent["latest_charge"]
    charge_id = charge if isinstance(charge, str) else charge["id"]
    found: dict[str, Any] = client.v1.charges.retrieve(charge_id).to_dict()
    return found


def dispute(intent_id: str, cents: int, status: str = "needs_response") -> dict[str, Any]:
    return {
        "id": "dp_test_1",
        "object": "dispute",
        "payment_intent": intent_id,
        "amount": cents,
        "currency": "usd",
        "status": status,
    }


async def balance_of(service: TokenService) -> tuple[int, int, int]:
    """(balance, paid, promotional) of alice."""
    found = await service.get_balance("alice")
    assert found is not None
    return found.tokens_balance, found.paid_tokens, found.promotional_tokens


async def taken_back(payments: PaymentService, purchase_id: str) -> tuple[int, int, int, int]:
    purchase = await payments.get_purchase(purchase_id)
    return (
        purchase.refunded_cents,
        purchase.clawed_back_tokens,
        purchase.lost_tokens,
        purchase.frozen_tokens,
    )


async def test_a_full_refund_of_an_unspent_purchase_takes_it_all_back(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent_id = await bought(payments, stripe_client)
    charge = refunded_charge(stripe_client, intent_id, 1_500)
    assert await deliver(payments, "charge.refunded", charge) == "applied"
    # Another event saying the same (Stripe sends charge.refunded and refund events).
    assert await deliver(payments, "charge.refunded", charge) == "ignored"
    assert await taken_back(payments, purchase_id) == (1_500, STARTER_TOKENS, 0, 0)
    assert await balance_of(service) == (BONUS_TOKENS, 0, BONUS_TOKENS)
    assert (await service.audit()).ok


async def test_what_was_spent_is_lost_and_no_other_grant_is_touched(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent_id = await bought(payments, stripe_client)
    # Promotional tokens go first: the bonus, then 95,000 of the purchase.
    assert (await service.debit("alice", amount=BONUS_TOKENS + 95_000)).success
    charge = refunded_charge(stripe_client, intent_id, 1_500)
    assert await deliver(payments, "charge.refunded", charge) == "applied"
    assert await taken_back(payments, purchase_id) == (1_500, 55_000, 95_000, 0)
    assert await balance_of(service) == (0, 0, 0)
    assert (await service.audit()).ok


async def test_partial_refunds_answer_for_their_share_cumulatively(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent_id = await bought(payments, stripe_client)
    first = refunded_charge(stripe_client, intent_id, 500)  # a third: 50,000 tokens
    assert await deliver(payments, "charge.refunded", first) == "applied"
    assert await taken_back(payments, purchase_id) == (500, 50_000, 0, 0)
    assert (await service.debit("alice", amount=BONUS_TOKENS + 90_000)).success
    second = refunded_charge(stripe_client, intent_id, 1_000)  # the rest: 100,000 more
    assert second["amount_refunded"] == 1_500
    assert await deliver(payments, "charge.refunded", second) == "applied"
    # An older delivery of the first refund, arriving late, changes nothing.
    assert await deliver(payments, "charge.refunded", first) == "ignored"
    assert await taken_back(payments, purchase_id) == (1_500, 60_000, 90_000, 0)
    assert await balance_of(service) == (0, 0, 0)
    assert (await service.audit()).ok


async def test_a_refund_leaves_what_a_pending_hold_needs(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent_id = await bought(payments, stripe_client)
    hold = await service.hold("alice", amount=BONUS_TOKENS + 30_000)
    assert hold.success
    charge = refunded_charge(stripe_client, intent_id, 1_500)
    assert await deliver(payments, "charge.refunded", charge) == "applied"
    assert await taken_back(payments, purchase_id) == (1_500, 120_000, 30_000, 0)
    balance = await service.get_balance("alice")
    assert balance is not None and (balance.tokens_balance, balance.held) == (35_000, 35_000)
    assert (await service.audit()).ok


async def test_a_dispute_freezes_its_share_and_a_won_dispute_gives_it_back(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent_id = await bought(payments, stripe_client)
    assert await deliver(payments, "charge.dispute.created", dispute(intent_id, 1_500)) == "applied"
    assert await taken_back(payments, purchase_id) == (0, 0, 0, STARTER_TOKENS)
    assert await balance_of(service) == (BONUS_TOKENS, 0, BONUS_TOKENS)
    closed = dispute(intent_id, 1_500, status="won")
    assert await deliver(payments, "charge.dispute.closed", closed) == "applied"
    assert await deliver(payments, "charge.dispute.closed", closed) == "ignored"
    purchase = await payments.get_purchase(purchase_id)
    assert (purchase.dispute_status, purchase.frozen_tokens) == ("won", 0)
    assert await balance_of(service) == (
        BONUS_TOKENS + STARTER_TOKENS,
        STARTER_TOKENS,
        BONUS_TOKENS,
    )
    assert (await service.audit()).ok


async def test_a_lost_dispute_keeps_what_it_froze_and_records_the_spent_rest_as_lost(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent_id = await bought(payments, stripe_client)
    assert (await service.debit("alice", amount=BONUS_TOKENS + 100_000)).success
    assert await deliver(payments, "charge.dispute.created", dispute(intent_id, 1_500)) == "applied"
    assert await taken_back(payments, purchase_id) == (0, 0, 0, 50_000)
    lost = dispute(intent_id, 1_500, status="lost")
    assert await deliver(payments, "charge.dispute.closed", lost) == "applied"
    purchase = await payments.get_purchase(purchase_id)
    assert purchase.dispute_status == "lost"
    assert await taken_back(payments, purchase_id) == (0, 50_000, 100_000, 0)
    assert await balance_of(service) == (0, 0, 0)
    assert (await service.audit()).ok


async def test_refunds_of_unknown_or_unpaid_purchases_are_ignored(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    order = await payments.order(pack_id="starter", amount_cents=None)
    created = await payments.create_payment_intent("alice", order)  # never paid
    unpaid = {
        "id": "ch_x",
        "payment_intent": created.payment_intent_id,
        "amount_refunded": 1_500,
        "currency": "usd",
    }
    assert await deliver(payments, "charge.refunded", unpaid) == "ignored"
    foreign = {**unpaid, "payment_intent": "pi_not_ours"}
    assert await deliver(payments, "charge.refunded", foreign) == "ignored"
    assert await balance_of(service) == (BONUS_TOKENS, 0, BONUS_TOKENS)
