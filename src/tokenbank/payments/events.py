"""What each Stripe event does, inside the transaction that records it (decision 14).

Each handler finds the purchase an event is about (by tokenbank's metadata, else by
the PaymentIntent id), locks it, and moves it forward; a state already reached is
``ignored``, so deliveries in any order and any number credit a purchase once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.payments import recharge, reversals, subscriptions
from tokenbank.payments import repository as repo
from tokenbank.payments.purchases import PURCHASE_KEY, Outcome, check_sale, fail, fulfil

Handler = Callable[[AsyncConnection, dict[str, Any], datetime], Awaitable[Outcome]]


def _metadata_purchase_id(thing: dict[str, Any]) -> str | None:
    metadata = thing.get("metadata")
    found = metadata.get(PURCHASE_KEY) if isinstance(metadata, dict) else None
    return found if isinstance(found, str) and len(found) <= 40 else None


async def purchase_of_intent(conn: AsyncConnection, intent: dict[str, Any]) -> AnyRow | None:
    purchase_id = _metadata_purchase_id(intent)
    if purchase_id is not None:
        found = await repo.purchase_row(conn, purchase_id, for_update=True)
        if found is not None:
            return found
    intent_id = intent.get("id")
    if isinstance(intent_id, str):
        return await repo.purchase_by_intent(conn, intent_id, for_update=True)
    return None


async def payment_intent_succeeded(
    conn: AsyncConnection, intent: dict[str, Any], now: datetime
) -> Outcome:
    purchase = await purchase_of_intent(conn, intent)
    if purchase is None:
        return Outcome.ignored("not a tokenbank purchase")
    if purchase.kind == "subscription":
        return Outcome.ignored("a subscription's tokens come with its invoices", purchase.id)
    received = intent.get("amount_received") or intent.get("amount")
    check_sale(purchase, received, intent.get("currency"))
    return await fulfil(conn, purchase, str(intent["id"]), now)


async def payment_intent_failed(
    conn: AsyncConnection, intent: dict[str, Any], now: datetime
) -> Outcome:
    purchase = await purchase_of_intent(conn, intent)
    if purchase is None:
        return Outcome.ignored("not a tokenbank purchase")
    error = intent.get("last_payment_error")
    reason = error.get("message") if isinstance(error, dict) else None
    failure = str(reason or "the payment failed")
    await recharge.payment_failed(conn, purchase, failure, now)  # a recharge's: turned off
    return await fail(conn, purchase, failure, now)


async def checkout_session_completed(
    conn: AsyncConnection, session: dict[str, Any], now: datetime
) -> Outcome:
    purchase_id = session.get("client_reference_id") or _metadata_purchase_id(session)
    purchase = (
        await repo.purchase_row(conn, purchase_id, for_update=True)
        if isinstance(purchase_id, str) and len(purchase_id) <= 40
        else None
    )
    if purchase is None:
        return Outcome.ignored("not a tokenbank checkout")
    if session.get("mode") == "subscription":
        return await subscriptions.checkout_completed(conn, purchase, session, now)
    if session.get("payment_status") != "paid":
        return Outcome.ignored("the checkout is not paid yet", purchase.id)
    check_sale(purchase, session.get("amount_total"), session.get("currency"))
    intent = session.get("payment_intent")
    intent_id = intent if isinstance(intent, str) else None
    return await fulfil(conn, purchase, intent_id, now)


async def checkout_session_expired(
    conn: AsyncConnection, session: dict[str, Any], now: datetime
) -> Outcome:
    purchase_id = session.get("client_reference_id")
    if not isinstance(purchase_id, str) or len(purchase_id) > 40:
        return Outcome.ignored("not a tokenbank checkout")
    purchase = await repo.purchase_row(conn, purchase_id, for_update=True)
    if purchase is None or purchase.status != "pending":
        return Outcome.ignored("nothing pending", purchase_id if purchase else None)
    await repo.update_purchase(conn, purchase.id, {"status": "canceled", "updated_at": now})
    return Outcome.applied("the checkout expired unpaid", purchase.id)


HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": payment_intent_succeeded,
    "payment_intent.payment_failed": payment_intent_failed,
    "checkout.session.completed": checkout_session_completed,
    "checkout.session.async_payment_succeeded": checkout_session_completed,
    "checkout.session.expired": checkout_session_expired,
    "invoice.paid": subscriptions.invoice_paid,
    # Stripe sends both for a paid invoice (localstripe only this one): the renewal
    # they lead to happens once per period, so either, or both, renew once.
    "invoice.payment_succeeded": subscriptions.invoice_paid,
    "customer.subscription.deleted": subscriptions.subscription_deleted,
    "charge.refunded": reversals.charge_refunded,
    "charge.dispute.created": reversals.dispute_created,
    "charge.dispute.closed": reversals.dispute_closed,
    "setup_intent.succeeded": recharge.setup_intent_succeeded,
}


async def apply_event(conn: AsyncConnection, event: dict[str, Any], now: datetime) -> Outcome:
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return Outcome.ignored(f"{event['type']} is not an event tokenbank acts on")
    obj: dict[str, Any] = event["data"]["object"]
    return await handler(conn, obj, now)
