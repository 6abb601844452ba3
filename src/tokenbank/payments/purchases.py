"""Purchases: what is being bought, and the one credit a paid purchase makes.

The functions taking a connection run inside the caller's transaction (the webhook's,
reconcile's, the recharge worker's), so that the purchase, its credit and the Stripe
event that caused them commit together or not at all (decision 14).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger import handlers
from tokenbank.ledger.grants import PAID
from tokenbank.ledger.operations import Credit
from tokenbank.ledger.repository import purchases as wallet_marks
from tokenbank.payments import repository as repo
from tokenbank.payments.errors import SaleMismatch

# Every credit a purchase makes carries this idempotency scope and the purchase's id:
# the database refuses a second credit of one purchase whatever path tries it.
CREDIT_SCOPE = "payments"
# Metadata keys tokenbank puts on what it creates in Stripe.
PURCHASE_KEY = "tokenbank_purchase_id"
USER_KEY = "tokenbank_user_id"


@dataclass(frozen=True, slots=True)
class Order:
    """What a purchase sells: a pack, a custom amount, a plan, or a recharge."""

    kind: str
    amount_cents: int
    currency: str
    tokens: int
    name: str
    pack_id: str | None = None
    plan: str | None = None
    stripe_price_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an event (or a reconcile) did: ``applied`` or ``ignored``, and why."""

    outcome: str
    detail: str
    purchase_id: str | None = None
    # The user whose wallet changed (caches are told after the commit).
    user_id: str | None = None

    @classmethod
    def applied(
        cls, detail: str, purchase_id: str | None = None, *, user_id: str | None = None
    ) -> Outcome:
        return cls("applied", detail, purchase_id, user_id)

    @classmethod
    def ignored(cls, detail: str, purchase_id: str | None = None) -> Outcome:
        return cls("ignored", detail, purchase_id)


def new_purchase_id() -> str:
    return f"pur_{uuid.uuid4().hex}"


def purchase_values(purchase_id: str, user_id: str, order: Order, now: datetime) -> dict[str, Any]:
    return {
        "id": purchase_id,
        "user_id": user_id,
        "kind": order.kind,
        "pack_id": order.pack_id,
        "plan": order.plan,
        "amount_cents": order.amount_cents,
        "currency": order.currency,
        "tokens": order.tokens,
        "status": "pending",
        "refunded_cents": 0,
        "clawed_back_tokens": 0,
        "lost_tokens": 0,
        "frozen_tokens": 0,
        "created_at": now,
        "updated_at": now,
    }


def stripe_metadata(purchase_id: str, user_id: str) -> dict[str, str]:
    return {PURCHASE_KEY: purchase_id, USER_KEY: user_id}


def check_sale(purchase: AnyRow, amount_cents: object, currency: object) -> None:
    """Refuse money that is not what was sold: metadata alone is never trusted."""
    if amount_cents != purchase.amount_cents or not isinstance(currency, str):
        raise SaleMismatch(
            f"purchase {purchase.id} was sold for {purchase.amount_cents} {purchase.currency},"
            f" the event says {amount_cents} {currency}"
        )
    if currency.lower() != purchase.currency:
        raise SaleMismatch(
            f"purchase {purchase.id} was sold in {purchase.currency}, the event says {currency}"
        )


async def fulfil(
    conn: AsyncConnection, purchase: AnyRow, payment_intent_id: str | None, now: datetime
) -> Outcome:
    """Credit a paid purchase's tokens as a paid grant, once; ``purchase`` is locked."""
    if purchase.status == "paid":
        return Outcome.ignored("already credited", purchase.id)
    operation_type = "auto_recharge" if purchase.kind == "auto_recharge" else "purchase"
    metadata: dict[str, Any] = {"purchaseId": purchase.id}
    if payment_intent_id is not None:
        metadata["paymentIntentId"] = payment_intent_id
    if purchase.pack_id is not None:
        metadata["packId"] = purchase.pack_id
    credit = Credit(
        user_id=purchase.user_id,
        amount_tokens=purchase.tokens,
        operation_type=operation_type,
        category=PAID,
        description=_description(purchase),
        metadata=metadata,
        idempotency_key=purchase.id,
        idempotency_scope=CREDIT_SCOPE,
    )
    result = await handlers.credit(conn, credit, now)
    if not result.success or result.transaction_id is None:
        # A closed wallet refuses credits: the money is Stripe's to refund.
        return Outcome.ignored(f"the wallet refused the credit: {result.error}", purchase.id)
    await mark_paid(
        conn,
        purchase,
        now,
        credit_transaction_id=result.transaction_id,
        stripe_payment_intent_id=payment_intent_id or purchase.stripe_payment_intent_id,
    )
    return Outcome.applied(
        f"credited {purchase.tokens} tokens", purchase.id, user_id=purchase.user_id
    )


async def mark_paid(conn: AsyncConnection, purchase: AnyRow, now: datetime, **values: Any) -> None:
    """A purchase is paid (with what ``values`` add: its credit, its Stripe ids), and
    its wallet remembers when it last bought."""
    await repo.update_purchase(
        conn,
        purchase.id,
        {"status": "paid", "paid_at": now, "updated_at": now, "failure_reason": None, **values},
    )
    await wallet_marks.mark_purchase(conn, purchase.user_id, now)


def _description(purchase: AnyRow) -> str:
    if purchase.kind == "auto_recharge":
        return "Auto-recharge"
    if purchase.pack_id is not None:
        return f"Purchase of the {purchase.pack_id} pack"
    return "Purchase of tokens"


async def fail(conn: AsyncConnection, purchase: AnyRow, reason: str, now: datetime) -> Outcome:
    """Mark a purchase that is not paid yet as failed (a paid one stays paid)."""
    if purchase.status == "paid":
        return Outcome.ignored("already paid", purchase.id)
    await repo.update_purchase(
        conn,
        purchase.id,
        {"status": "failed", "failure_reason": reason[:500], "updated_at": now},
    )
    return Outcome.applied(f"payment failed: {reason}", purchase.id)
