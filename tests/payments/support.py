"""What the payment tests share: a PaymentService on the suite's service and a
localstripe, and events signed as Stripe signs them (the SDK's own signing code)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import stripe
from pydantic import SecretStr
from sqlalchemy import func, select

from tokenbank.config import Settings
from tokenbank.ledger.service import TokenService
from tokenbank.payments.gateway import StripeGateway
from tokenbank.payments.service import PaymentService
from tokenbank.pricing.service import PricingService

WEBHOOK_SECRET = "whsec_tokenbank_test_secret"
SECRET_KEY = "sk_test_tokenbank"
PUBLISHABLE_KEY = "pk_test_tokenbank"


async def count(tokens: TokenService, model: Any, *conditions: Any) -> int:
    """How many rows of a model's table match."""
    async with (await tokens.engine()).connect() as conn:
        query = select(func.count()).select_from(model.__table__).where(*conditions)
        return int((await conn.execute(query)).scalar_one())


def stripe_settings(api_base: str) -> Settings:
    return Settings(
        stripe_secret_key=SecretStr(SECRET_KEY),
        stripe_publishable_key=PUBLISHABLE_KEY,
        stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
        stripe_api_base=api_base,
    )


async def payment_service(tokens: TokenService, api_base: str) -> PaymentService:
    pricing = PricingService(await tokens.engine(), settings=tokens.settings, clock=tokens.clock)
    gateway = StripeGateway(stripe_settings(api_base))
    return PaymentService(tokens, pricing=pricing, gateway=gateway)


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def signed(
    payload: dict[str, Any], *, secret: str = WEBHOOK_SECRET, age_seconds: int = 0
) -> tuple[bytes, str]:
    """The body and Stripe-Signature header Stripe would send."""
    body = json.dumps(payload)
    timestamp = int(time.time()) - age_seconds
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return body.encode(), header


def pay_intent(
    client: stripe.StripeClient, intent_id: str, card: str = "pm_card_visa"
) -> dict[str, Any]:
    """What Stripe.js does in the page: attach a card and confirm; the PaymentIntent after."""
    client.v1.payment_intents.update(intent_id, {"payment_method": card})
    paid: dict[str, Any] = client.v1.payment_intents.confirm(intent_id).to_dict()
    return paid


def checkout_completed(
    purchase_id: str, amount_cents: int, intent_id: str | None, *, currency: str = "usd"
) -> dict[str, Any]:
    """A paid Checkout Session as Stripe sends it in checkout.session.completed."""
    return {
        "id": f"cs_test_{uuid.uuid4().hex[:24]}",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "client_reference_id": purchase_id,
        "amount_total": amount_cents,
        "currency": currency,
        "payment_intent": intent_id,
        "metadata": {"tokenbank_purchase_id": purchase_id},
    }
