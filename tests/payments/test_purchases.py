"""Buying tokens: a purchase is credited once, as a paid grant, whatever Stripe sends
in whatever order and however often; bad events change nothing (both engines)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from tests.payments.support import (
    checkout_completed,
    count,
    event,
    pay_intent,
    payment_service,
    signed,
)
from tokenbank.db.models import LedgerTransaction, StripeEvent
from tokenbank.errors import InvalidInput
from tokenbank.ledger.repository import purchases as wallet_marks
from tokenbank.ledger.service import TokenService
from tokenbank.payments.errors import BadWebhook, PackNotFound, SaleMismatch
from tokenbank.payments.service import PaymentService
from tokenbank.testing.localstripe import LocalStripe

STARTER_TOKENS = 150_000


@pytest.fixture
async def payments(
    service: TokenService, localstripe: LocalStripe
) -> AsyncIterator[PaymentService]:
    payments = await payment_service(service, localstripe.api_base)
    await (await payments.packs()).seed_defaults()
    await service.open_wallet("alice")
    yield payments
    await payments.aclose()


async def buy(
    payments: PaymentService, client: stripe.StripeClient, pack: str = "starter"
) -> tuple[str, dict[str, Any]]:
    """A purchase paid in the page: (purchase id, the succeeded PaymentIntent)."""
    order = await payments.order(pack_id=pack, amount_cents=None)
    created = await payments.create_payment_intent("alice", order)
    return created.purchase_id, pay_intent(client, created.payment_intent_id)


async def deliver(payments: PaymentService, payload: dict[str, Any]) -> str:
    body, header = signed(payload)
    return (await payments.take_webhook(body, header)).outcome


async def purchase_transactions(service: TokenService) -> int:
    return await count(service, LedgerTransaction, LedgerTransaction.operation_type == "purchase")


async def test_a_pack_paid_in_the_page_is_credited_once_as_a_paid_grant(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    before = await service.get_balance("alice")
    assert before is not None
    purchase_id, intent = await buy(payments, stripe_client)
    succeeded = event("payment_intent.succeeded", intent)
    assert await deliver(payments, succeeded) == "applied"
    assert await deliver(payments, succeeded) == "duplicate"
    after = await service.get_balance("alice")
    assert after is not None
    assert after.tokens_balance == before.tokens_balance + STARTER_TOKENS
    assert after.paid_tokens == before.paid_tokens + STARTER_TOKENS
    purchase = await payments.get_purchase(purchase_id)
    assert (purchase.status, purchase.stripe_payment_intent_id) == ("paid", intent["id"])
    assert purchase.credit_transaction_id is not None
    assert await purchase_transactions(service) == 1
    async with (await service.engine()).connect() as conn:
        wallet = await wallet_marks.wallet_of_user(conn, "alice")
    assert wallet is not None and wallet.last_purchase_at == service.clock()
    assert (await service.audit()).ok


@pytest.mark.parametrize("checkout_first", [True, False])
async def test_checkout_and_payment_intent_events_credit_once_in_either_order(
    payments: PaymentService,
    service: TokenService,
    stripe_client: stripe.StripeClient,
    checkout_first: bool,
) -> None:
    purchase_id, intent = await buy(payments, stripe_client)
    events = [
        event("checkout.session.completed", checkout_completed(purchase_id, 1_500, intent["id"])),
        event("payment_intent.succeeded", intent),
    ]
    outcomes = [await deliver(payments, e) for e in (events if checkout_first else events[::-1])]
    assert outcomes == ["applied", "ignored"]
    assert await purchase_transactions(service) == 1
    assert (await service.audit()).ok


@pytest.mark.parametrize("seed", range(3))
async def test_every_event_twice_in_shuffled_order_credits_each_purchase_once(
    payments: PaymentService,
    service: TokenService,
    stripe_client: stripe.StripeClient,
    seed: int,
) -> None:
    deliveries = []
    for pack in ("starter", "pro", "starter"):
        purchase_id, intent = await buy(payments, stripe_client, pack)
        cents = intent["amount"]
        completed = checkout_completed(purchase_id, cents, intent["id"])
        pair = [
            event("checkout.session.completed", completed),
            event("payment_intent.succeeded", intent),
        ]
        deliveries += pair * 2
    random.Random(seed).shuffle(deliveries)
    for payload in deliveries:
        await deliver(payments, payload)
    balance = await service.get_balance("alice")
    assert balance is not None
    assert balance.paid_tokens == 2 * STARTER_TOKENS + 750_000
    assert await purchase_transactions(service) == 3
    assert await count(service, StripeEvent) == 6
    assert (await service.audit()).ok


async def test_twenty_concurrent_deliveries_of_one_event_make_one_transaction(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    _, intent = await buy(payments, stripe_client)
    body, header = signed(event("payment_intent.succeeded", intent))
    taken = await asyncio.gather(*(payments.take_webhook(body, header) for _ in range(20)))
    assert sorted(t.outcome for t in taken).count("applied") == 1
    assert sum(t.duplicate for t in taken) == 19
    assert await purchase_transactions(service) == 1
    assert (await service.audit()).ok


async def nothing_written(
    service: TokenService, payments: PaymentService, purchase_id: str
) -> None:
    assert await count(service, StripeEvent) == 0
    assert await purchase_transactions(service) == 0
    assert (await payments.get_purchase(purchase_id)).status == "pending"


async def test_a_bad_signature_a_stale_timestamp_or_another_secret_writes_nothing(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent = await buy(payments, stripe_client)
    payload = event("payment_intent.succeeded", intent)
    body, header = signed(payload)
    tampered = body.replace(b'"amount": 1500', b'"amount": 1501')
    stale_body, stale_header = signed(payload, age_seconds=400)
    other_body, other_header = signed(payload, secret="whsec_someone_else")
    for attempt_body, attempt_header in (
        (tampered, header),
        (stale_body, stale_header),
        (other_body, other_header),
        (body, None),
        (b"not json", signed({"x": 1})[1]),
    ):
        with pytest.raises(BadWebhook):
            await payments.take_webhook(attempt_body, attempt_header)
    await nothing_written(service, payments, purchase_id)


@pytest.mark.parametrize(("field", "value"), [("amount", 1_499), ("currency", "eur")])
async def test_an_event_for_another_amount_or_currency_writes_nothing(
    payments: PaymentService,
    service: TokenService,
    stripe_client: stripe.StripeClient,
    field: str,
    value: object,
) -> None:
    purchase_id, intent = await buy(payments, stripe_client)
    with pytest.raises(SaleMismatch):
        await deliver(payments, event("payment_intent.succeeded", {**intent, field: value}))
    wrong_total = checkout_completed(purchase_id, 1_499, intent["id"])
    with pytest.raises(SaleMismatch):
        await deliver(payments, event("checkout.session.completed", wrong_total))
    await nothing_written(service, payments, purchase_id)


async def test_unknown_packs_and_amounts_under_the_minimum_are_refused(
    payments: PaymentService, service: TokenService
) -> None:
    with pytest.raises(PackNotFound):
        await payments.order(pack_id="no-such-pack", amount_cents=None)
    with pytest.raises(InvalidInput, match="minimum"):
        await payments.order(pack_id=None, amount_cents=499)
    with pytest.raises(InvalidInput):
        await payments.order(pack_id="starter", amount_cents=500)
    assert (await payments.order(pack_id=None, amount_cents=500)).tokens == 50_000


async def test_a_failed_payment_marks_the_purchase_and_a_later_success_still_credits(
    payments: PaymentService, service: TokenService, stripe_client: stripe.StripeClient
) -> None:
    purchase_id, intent = await buy(payments, stripe_client)
    failed = {
        **intent,
        "status": "requires_payment_method",
        "last_payment_error": {"message": "Your card was declined."},
    }
    assert await deliver(payments, event("payment_intent.payment_failed", failed)) == "applied"
    purchase = await payments.get_purchase(purchase_id)
    assert (purchase.status, purchase.failure_reason) == ("failed", "Your card was declined.")
    assert await deliver(payments, event("payment_intent.succeeded", intent)) == "applied"
    assert (await payments.get_purchase(purchase_id)).status == "paid"
    assert await purchase_transactions(service) == 1


async def test_events_tokenbank_does_not_act_on_are_recorded_and_ignored(
    payments: PaymentService, service: TokenService
) -> None:
    assert await deliver(payments, event("customer.created", {"id": "cus_x"})) == "ignored"
    foreign = {"id": "pi_foreign", "amount": 100, "currency": "usd", "metadata": {}}
    assert await deliver(payments, event("payment_intent.succeeded", foreign)) == "ignored"
    assert await count(service, StripeEvent) == 2
    assert await purchase_transactions(service) == 0
