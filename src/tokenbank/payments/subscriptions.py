"""Plans bought as Stripe subscriptions (decision 14).

Checkout in ``subscription`` mode puts the wallet on the plan. Each paid invoice
renews the plan's allocation at once, through the renewal of decision 16 (once per
period, whoever comes first: the invoice or the daily job). The subscription's end
(``customer.subscription.deleted``, sent when it actually ends) takes the plan away.
An invoice that arrives before its checkout finds the user by the Stripe customer
and the plan by the Stripe price, so the order of arrival does not matter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository import purchases as wallet_marks
from tokenbank.ledger.repository import writes as ledger_writes
from tokenbank.payments import repository as repo
from tokenbank.payments.purchases import Outcome, check_sale, mark_paid
from tokenbank.plans import repository as plans_repo
from tokenbank.renewals.service import RenewalRefused, renew_locked


def _period_end(subscription: dict[str, Any]) -> datetime | None:
    end = subscription.get("current_period_end")
    if end is None:
        items = (subscription.get("items") or {}).get("data") or []
        end = items[0].get("current_period_end") if items else None
    return datetime.fromtimestamp(end, UTC) if isinstance(end, int) else None


async def _join(
    conn: AsyncConnection,
    subscription_id: str,
    user_id: str,
    plan: str,
    now: datetime,
    period_end: datetime | None = None,
) -> None:
    await repo.upsert_subscription(
        conn,
        {
            "id": subscription_id,
            "user_id": user_id,
            "plan": plan,
            "status": "active",
            "current_period_end": period_end,
            "created_at": now,
            "updated_at": now,
        },
    )
    wallet = await wallet_marks.wallet_of_user(conn, user_id)
    if wallet is not None and wallet.plan != plan:
        await ledger_writes.set_wallet_plan(conn, user_id, plan, now)


async def checkout_completed(
    conn: AsyncConnection, purchase: AnyRow, session: dict[str, Any], now: datetime
) -> Outcome:
    subscription_id = session.get("subscription")
    if not isinstance(subscription_id, str):
        return Outcome.ignored("the checkout names no subscription", purchase.id)
    if purchase.status == "paid":
        return Outcome.ignored("already subscribed", purchase.id)
    check_sale(purchase, session.get("amount_total"), session.get("currency"))
    await _join(conn, subscription_id, purchase.user_id, purchase.plan, now)
    await mark_paid(conn, purchase, now, stripe_subscription_id=subscription_id)
    return Outcome.applied(f"subscribed to {purchase.plan}", purchase.id, user_id=purchase.user_id)


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    found = invoice.get("subscription")
    if found is None:
        details = (invoice.get("parent") or {}).get("subscription_details") or {}
        found = details.get("subscription")
    return found if isinstance(found, str) else None


def _invoice_price(invoice: dict[str, Any]) -> str | None:
    lines = (invoice.get("lines") or {}).get("data") or []
    for line in lines:
        price = line.get("price") or {}
        found = price.get("id") if isinstance(price, dict) else price
        if found is None:
            found = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
        if isinstance(found, str):
            return found
    return None


async def _subscriber(
    conn: AsyncConnection, invoice: dict[str, Any], subscription_id: str
) -> tuple[str, str] | None:
    """(user id, plan) of an invoice's subscription, known or inferred."""
    known = await repo.subscription_row(conn, subscription_id)
    if known is not None:
        return known.user_id, known.plan
    customer = invoice.get("customer")
    price = _invoice_price(invoice)
    user_id = await repo.user_of_customer(conn, customer) if isinstance(customer, str) else None
    plan = await plans_repo.plan_by_stripe_price(conn, price) if price else None
    if user_id is None or plan is None:
        return None
    return user_id, plan.name


async def invoice_paid(conn: AsyncConnection, invoice: dict[str, Any], now: datetime) -> Outcome:
    subscription_id = _invoice_subscription(invoice)
    if subscription_id is None:
        return Outcome.ignored("not a subscription invoice")
    subscriber = await _subscriber(conn, invoice, subscription_id)
    if subscriber is None:
        return Outcome.ignored("not a tokenbank subscription")
    user_id, plan = subscriber
    await _join(conn, subscription_id, user_id, plan, now)
    try:
        async with conn.begin_nested():
            renewal = await renew_locked(conn, user_id, now)
    except RenewalRefused as refused:
        return Outcome.ignored(f"no allocation: {refused}")
    return Outcome.applied(f"renewed {plan}: {renewal.tokens_granted} tokens", user_id=user_id)


async def subscription_deleted(
    conn: AsyncConnection, subscription: dict[str, Any], now: datetime
) -> Outcome:
    known = await repo.subscription_row(conn, str(subscription["id"]))
    if known is None:
        return Outcome.ignored("not a tokenbank subscription")
    if known.status == "canceled":
        return Outcome.ignored("already ended")
    await repo.upsert_subscription(
        conn,
        {
            "id": known.id,
            "user_id": known.user_id,
            "plan": known.plan,
            "status": "canceled",
            "current_period_end": _period_end(subscription) or known.current_period_end,
            "created_at": known.created_at,
            "updated_at": now,
        },
    )
    wallet = await wallet_marks.wallet_of_user(conn, known.user_id)
    if wallet is not None and wallet.plan == known.plan:
        await ledger_writes.set_wallet_plan(conn, known.user_id, None, now)
    return Outcome.applied(f"the {known.plan} subscription ended", user_id=known.user_id)
