"""Auto-recharge over HTTP: a user's settings, and a SetupIntent to save a card with
(an app key with the ``payments`` scope; decision 14)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool, StrictInt

from tokenbank.api.admin import AdminModel
from tokenbank.api.auth import PaymentsKey
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import UserIdPath
from tokenbank.api.state import get_services
from tokenbank.api.views import iso_utc_or_none
from tokenbank.db.models import MAX_PRICE_CENTS, MAX_PURCHASE_TOKENS
from tokenbank.payments.recharge import AutoRecharge, RechargeService

router = APIRouter(prefix="/api/users/{userId}/auto-recharge", tags=["payments"])


def _recharges(request: Request) -> RechargeService:
    services = get_services(request)
    return RechargeService(services.payments, services.tokens)


def auto_recharge_json(settings: AutoRecharge) -> dict[str, Any]:
    return {
        "userId": settings.user_id,
        "enabled": settings.enabled,
        "thresholdTokens": settings.threshold_tokens,
        "packId": settings.pack_id,
        "amountCents": settings.amount_cents,
        "paymentMethodId": settings.payment_method_id,
        "disabledReason": settings.disabled_reason,
        "updatedAt": iso_utc_or_none(settings.updated_at),
    }


class AutoRechargeSettings(AdminModel):
    """camelCase on the wire (snake_case accepted), strict, unknown fields refused.
    Exactly one of packId and amountCents (checked by the service: 400)."""

    enabled: StrictBool
    threshold_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_PURCHASE_TOKENS)]
    pack_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    amount_cents: Annotated[StrictInt, Field(ge=1, le=MAX_PRICE_CENTS)] | None = None
    payment_method_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None


@router.get(
    "",
    summary="A user's auto-recharge: terms, saved card, and why tokenbank turned it off",
    responses=errors(AUTHENTICATED, WITH_INPUT, 404),
)
async def get_auto_recharge(
    request: Request, user_id: UserIdPath, principal: PaymentsKey
) -> dict[str, Any]:
    return {"data": auto_recharge_json(await _recharges(request).get(user_id))}


@router.put(
    "",
    summary="Set a user's auto-recharge (enabling needs a saved card, or paymentMethodId)",
    responses=errors(AUTHENTICATED, WITH_BODY, 404, 502),
)
async def put_auto_recharge(
    request: Request, user_id: UserIdPath, body: AutoRechargeSettings, principal: PaymentsKey
) -> dict[str, Any]:
    saved = await _recharges(request).configure(
        user_id,
        enabled=body.enabled,
        threshold_tokens=body.threshold_tokens,
        pack_id=body.pack_id,
        amount_cents=body.amount_cents,
        payment_method_id=body.payment_method_id,
    )
    return {"data": auto_recharge_json(saved)}


@router.post(
    "/setup-intent",
    summary="Start saving a card for auto-recharge (confirm it with Stripe.js)",
    responses=errors(AUTHENTICATED, WITH_BODY, 404, 502),
)
async def create_setup_intent(
    request: Request, user_id: UserIdPath, principal: PaymentsKey
) -> dict[str, Any]:
    setup = await _recharges(request).start_card_setup(user_id)
    return {
        "data": {
            "setupIntentId": setup.setup_intent_id,
            "clientSecret": setup.client_secret,
            "publishableKey": setup.publishable_key,
        }
    }
