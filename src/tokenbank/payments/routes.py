"""Payments over HTTP: the packs on sale, buying (Checkout, PaymentIntents), purchases,
Stripe's webhook, and the packs' admin routes (decision 14)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field, StrictBool, StrictInt
from pydantic.json_schema import SkipJsonSchema

from tokenbank.api.admin import AdminModel, PatchModel, admin_router
from tokenbank.api.auth import AdminKey, PaymentsKey, ReadKey
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import UserId
from tokenbank.api.state import get_services
from tokenbank.api.views import iso_utc, iso_utc_or_none
from tokenbank.config import MAX_PAGE_SIZE
from tokenbank.db.rows import AnyRow
from tokenbank.payments.packs import Pack, PackTerms
from tokenbank.payments.service import PaymentService

router = APIRouter(prefix="/api", tags=["payments"])
admin = admin_router()

PackIdPath = Annotated[str, Path(alias="packId", min_length=1, max_length=64)]
PurchaseIdPath = Annotated[str, Path(alias="purchaseId", min_length=1, max_length=40)]
Cents = Annotated[StrictInt, Field(ge=1, le=100_000_000)]
Url = Annotated[str, Field(min_length=8, max_length=2_048)]


def _payments(request: Request) -> PaymentService:
    return get_services(request).payments


def pack_json(pack: Pack) -> dict[str, Any]:
    terms = pack.terms
    return {
        "packId": pack.id,
        "name": terms.name,
        "description": terms.description,
        "tokens": terms.tokens,
        "priceCents": terms.price_cents,
        "currency": terms.currency,
        "price": f"{terms.price_cents // 100}.{terms.price_cents % 100:02d}",
        "tokensPerUsd": pack.tokens_per_usd(),
        "popular": terms.popular,
        "active": terms.active,
        "sortOrder": terms.sort_order,
        "stripePriceId": terms.stripe_price_id,
    }


def purchase_json(row: AnyRow) -> dict[str, Any]:
    return {
        "purchaseId": row.id,
        "userId": row.user_id,
        "kind": row.kind,
        "packId": row.pack_id,
        "plan": row.plan,
        "amountCents": row.amount_cents,
        "currency": row.currency,
        "tokens": row.tokens,
        "status": row.status,
        "checkoutSessionId": row.stripe_checkout_session_id,
        "paymentIntentId": row.stripe_payment_intent_id,
        "subscriptionId": row.stripe_subscription_id,
        "transactionId": row.credit_transaction_id,
        "failureReason": row.failure_reason,
        "refundedCents": row.refunded_cents,
        "clawedBackTokens": row.clawed_back_tokens,
        "lostTokens": row.lost_tokens,
        "disputeStatus": row.dispute_status,
        "frozenTokens": row.frozen_tokens,
        "createdAt": iso_utc(row.created_at),
        "paidAt": iso_utc_or_none(row.paid_at),
    }


# --- buying ----------------------------------------------------------------------------------


class Purchase(AdminModel):
    """camelCase on the wire (snake_case accepted), strict, unknown fields refused."""

    user_id: UserId
    pack_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    amount_cents: Cents | None = None


class CheckoutRequest(Purchase):
    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    success_url: Url
    cancel_url: Url


@router.get("/packs", summary="The token packs on sale", responses=errors(AUTHENTICATED))
async def list_packs(request: Request, principal: ReadKey) -> dict[str, Any]:
    packs = await (await _payments(request).packs()).list_packs(active_only=True)
    return {"data": [pack_json(pack) for pack in packs]}


@router.post(
    "/checkout",
    summary="Start a Stripe Checkout for a pack, an amount or a plan",
    responses=errors(AUTHENTICATED, WITH_BODY, 404, 502),
)
async def start_checkout(
    request: Request, body: CheckoutRequest, principal: PaymentsKey
) -> dict[str, Any]:
    payments = _payments(request)
    order = await payments.order(
        pack_id=body.pack_id, amount_cents=body.amount_cents, plan=body.plan
    )
    started = await payments.start_checkout(
        body.user_id, order, success_url=body.success_url, cancel_url=body.cancel_url
    )
    return {
        "data": {
            "purchaseId": started.purchase_id,
            "checkoutSessionId": started.checkout_session_id,
            "url": started.url,
        }
    }


@router.post(
    "/payments/intents",
    summary="Create a PaymentIntent for an in-page card form",
    responses=errors(AUTHENTICATED, WITH_BODY, 404, 502),
)
async def create_intent(request: Request, body: Purchase, principal: PaymentsKey) -> dict[str, Any]:
    payments = _payments(request)
    order = await payments.order(pack_id=body.pack_id, amount_cents=body.amount_cents)
    created = await payments.create_payment_intent(body.user_id, order)
    return {
        "data": {
            "purchaseId": created.purchase_id,
            "paymentIntentId": created.payment_intent_id,
            "clientSecret": created.client_secret,
            "publishableKey": created.publishable_key,
        }
    }


@router.get(
    "/payments/purchases",
    summary="Purchases, newest first (one user's with userId)",
    responses=errors(AUTHENTICATED, WITH_INPUT),
)
async def list_purchases(
    request: Request,
    principal: PaymentsKey,
    user_id: Annotated[str | None, Query(alias="userId", min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    rows = await _payments(request).list_purchases(user_id=user_id, limit=limit, offset=offset)
    return {"data": [purchase_json(row) for row in rows]}


@router.get(
    "/payments/purchases/{purchaseId}",
    summary="One purchase and what became of it",
    responses=errors(AUTHENTICATED, WITH_INPUT, 404),
)
async def get_purchase(
    request: Request, purchase_id: PurchaseIdPath, principal: PaymentsKey
) -> dict[str, Any]:
    return {"data": purchase_json(await _payments(request).get_purchase(purchase_id))}


@router.post(
    "/stripe/webhook",
    summary="Stripe's signed events (the billing defaults' webhook URL)",
    responses=errors(WITH_BODY, 503),
)
async def stripe_webhook(request: Request) -> dict[str, Any]:
    # The raw body: the signature is over the exact bytes Stripe sent.
    payload = await request.body()
    taken = await _payments(request).take_webhook(payload, request.headers.get("stripe-signature"))
    return {
        "received": True,
        "eventId": taken.event_id,
        "type": taken.event_type,
        "outcome": taken.outcome,
        "detail": taken.detail,
        "duplicate": taken.duplicate,
    }


# --- packs (admin) ---------------------------------------------------------------------------


class PackFields(AdminModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    tokens: Annotated[StrictInt, Field(ge=1, le=1_000_000_000_000)]
    price_cents: Cents
    currency: Annotated[str, Field(pattern="^[a-z]{3}$")] = "usd"
    description: Annotated[str, Field(max_length=500)] | None = None
    stripe_price_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    active: StrictBool = True
    popular: StrictBool = False
    sort_order: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 0


class NewPack(PackFields):
    pack_id: Annotated[str, Field(min_length=1, max_length=64)]


class PackPatch(PatchModel):
    not_null = ("name", "tokens", "price_cents", "currency", "active", "popular", "sort_order")

    name: Annotated[str, Field(min_length=1, max_length=100)] | SkipJsonSchema[None] = None
    tokens: Annotated[StrictInt, Field(ge=1, le=1_000_000_000_000)] | SkipJsonSchema[None] = None
    price_cents: Cents | SkipJsonSchema[None] = None
    currency: Annotated[str, Field(pattern="^[a-z]{3}$")] | SkipJsonSchema[None] = None
    description: Annotated[str, Field(max_length=500)] | None = None
    stripe_price_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    active: StrictBool | SkipJsonSchema[None] = None
    popular: StrictBool | SkipJsonSchema[None] = None
    sort_order: Annotated[StrictInt, Field(ge=0, le=1_000_000)] | SkipJsonSchema[None] = None


@admin.get("/packs", summary="Every pack, on sale or not")
async def admin_list_packs(request: Request, principal: AdminKey) -> dict[str, Any]:
    packs = await (await _payments(request).packs()).list_packs(active_only=False)
    return {"data": [pack_json(pack) for pack in packs]}


@admin.post("/packs", summary="Create a pack", status_code=201, responses=errors(WITH_BODY, 409))
async def admin_create_pack(request: Request, body: NewPack, principal: AdminKey) -> dict[str, Any]:
    terms = PackTerms(**body.model_dump(exclude={"pack_id"}))
    pack = await (await _payments(request).packs()).create(Pack(body.pack_id, terms))
    return {"data": pack_json(pack)}


@admin.patch(
    "/packs/{packId}",
    summary="Change a pack (its price id included); active=false takes it off sale",
    responses=errors(WITH_BODY, 404),
)
async def admin_update_pack(
    request: Request, pack_id: PackIdPath, body: PackPatch, principal: AdminKey
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    pack = await (await _payments(request).packs()).update(pack_id, changes)
    return {"data": pack_json(pack)}


@admin.delete(
    "/packs/{packId}",
    summary="Take a pack off sale (kept: purchases name it)",
    responses=errors(WITH_INPUT, 404),
)
async def admin_deactivate_pack(
    request: Request, pack_id: PackIdPath, principal: AdminKey
) -> dict[str, Any]:
    pack = await (await _payments(request).packs()).update(pack_id, {"active": False})
    return {"data": pack_json(pack)}
