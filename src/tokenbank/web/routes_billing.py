"""The signed-in user's billing settings: auto-recharge (decision 14), the saved card
(a SetupIntent confirmed with Stripe.js), and past purchases with their receipts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.config import Settings
from tokenbank.errors import InvalidInput, NotFound
from tokenbank.payments.errors import PaymentProviderError, PaymentsNotConfigured
from tokenbank.payments.recharge import AutoRecharge, RechargeService
from tokenbank.web.auth import CsrfUser, PageUser
from tokenbank.web.templating import page
from tokenbank.web.wallet_pages import (
    no_wallet,
    parse_dollars,
    parse_page,
    parse_tokens,
    refusal_text,
)

router = APIRouter(include_in_schema=False)

PURCHASES_PAGE = 25
CUSTOM_AMOUNT = "amount"
MAX_PURCHASE_ID_LENGTH = 40
PROVIDER_FAILED = "Stripe could not be reached: nothing was changed. Try again shortly."


def _recharges(request: Request) -> RechargeService:
    services = get_services(request)
    return RechargeService(services.payments, services.tokens)


def stripe_js_url(settings: Settings) -> str | None:
    """Stripe.js for the card form: only with a publishable key and a URL to load
    it from (tests leave the URL empty and never reach js.stripe.com)."""
    if settings.stripe_publishable_key and settings.stripe_js_url:
        return settings.stripe_js_url
    return None


@dataclass(frozen=True, slots=True)
class RechargeForm:
    """The auto-recharge form's fields as typed (shown again after a refusal)."""

    enabled: bool
    threshold: str
    pack_id: str
    amount: str

    @classmethod
    def of(cls, current: AutoRecharge) -> RechargeForm:
        cents = current.amount_cents
        return cls(
            enabled=current.enabled,
            threshold="" if current.threshold_tokens is None else str(current.threshold_tokens),
            pack_id=current.pack_id or (CUSTOM_AMOUNT if cents is not None else ""),
            amount="" if cents is None else f"{cents // 100}.{cents % 100:02d}",
        )


async def _billing_page(
    request: Request,
    signed_in: SignedIn,
    *,
    form: RechargeForm | None = None,
    status_code: int = 200,
    error: str | None = None,
    page_number: int = 1,
) -> HTMLResponse:
    services = get_services(request)
    if signed_in.user_id is None:
        return no_wallet(request, signed_in, status_code=status_code)
    current = await _recharges(request).get(signed_in.user_id)
    packs = await (await services.payments.packs()).list_packs(active_only=False)
    purchases = await services.payments.list_purchases(
        user_id=signed_in.user_id,
        limit=PURCHASES_PAGE + 1,
        offset=(page_number - 1) * PURCHASES_PAGE,
    )
    return page(
        request,
        "billing.html",
        signed_in,
        status_code=status_code,
        recharge=current,
        form=form or RechargeForm.of(current),
        packs=[pack for pack in packs if pack.terms.active],
        pack_names={pack.id: pack.terms.name for pack in packs},
        purchases=purchases[:PURCHASES_PAGE],
        page_number=page_number,
        has_next=len(purchases) > PURCHASES_PAGE,
        payments_on=services.settings.stripe_secret_key is not None,
        stripe_js=stripe_js_url(services.settings),
        publishable_key=services.settings.stripe_publishable_key or "",
        minimum_cents=services.settings.minimum_purchase_cents,
        saved=request.query_params.get("saved"),
        error=error,
    )


@router.get("/settings/billing")
async def billing(request: Request, signed_in: PageUser, page: str = "") -> Response:
    try:
        number = parse_page(page)
    except InvalidInput as bad:
        return await _billing_page(request, signed_in, status_code=400, error=refusal_text(bad))
    return await _billing_page(request, signed_in, page_number=number)


def _terms(form: RechargeForm, settings: Settings) -> dict[str, Any]:
    """configure()'s terms from the form: a threshold, and a pack or an amount."""
    terms: dict[str, Any] = {"threshold_tokens": parse_tokens(form.threshold, "thresholdTokens")}
    if form.pack_id == CUSTOM_AMOUNT:
        terms["amount_cents"] = parse_dollars(form.amount, settings.minimum_purchase_cents)
    elif form.pack_id:
        terms["pack_id"] = form.pack_id[:64]
    else:
        raise InvalidInput("packId", "choose a pack, or a custom amount")
    return terms


@router.post("/settings/billing/auto-recharge")
async def save_auto_recharge(
    request: Request,
    signed_in: CsrfUser,
    enabled: Annotated[str, Form()] = "",
    threshold: Annotated[str, Form()] = "",
    pack_id: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
) -> Response:
    form = RechargeForm(bool(enabled), threshold[:32], pack_id[:64], amount[:32])
    if signed_in.user_id is None:
        return no_wallet(request, signed_in, status_code=400)
    settings = get_services(request).settings
    try:
        terms = _terms(form, settings)
        await _recharges(request).configure(signed_in.user_id, enabled=form.enabled, **terms)
    except InvalidInput as bad:
        error = refusal_text(bad)
        return await _billing_page(request, signed_in, form=form, status_code=400, error=error)
    except NotFound:
        error = "That pack is not on sale: choose another."
        return await _billing_page(request, signed_in, form=form, status_code=400, error=error)
    except (PaymentProviderError, PaymentsNotConfigured):
        return await _billing_page(
            request, signed_in, form=form, status_code=502, error=PROVIDER_FAILED
        )
    return RedirectResponse("/settings/billing?saved=auto-recharge", status_code=303)


@router.post("/settings/billing/setup-intent")
async def start_card_setup(request: Request, signed_in: CsrfUser) -> Response:
    """A SetupIntent's client secret for billing-card.js (CSRF in X-CSRF-Token)."""
    if signed_in.user_id is None:
        return JSONResponse({"error": "this account has no wallet"}, status_code=400)
    try:
        setup = await _recharges(request).start_card_setup(signed_in.user_id)
    except PaymentsNotConfigured:
        return JSONResponse({"error": "payments are not available"}, status_code=503)
    except PaymentProviderError:
        return JSONResponse({"error": PROVIDER_FAILED}, status_code=502)
    return JSONResponse(
        {"clientSecret": setup.client_secret, "publishableKey": setup.publishable_key},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/settings/billing/card")
async def save_card(
    request: Request,
    signed_in: CsrfUser,
    payment_method_id: Annotated[str, Form()] = "",
) -> Response:
    """Keep the card a confirmed SetupIntent holds (its webhook saves it too)."""
    if signed_in.user_id is None:
        return no_wallet(request, signed_in, status_code=400)
    method = payment_method_id.strip()[:256]
    try:
        if not method:
            raise InvalidInput("paymentMethodId", "no card was given: add one with the card form")
        await _recharges(request).save_card(signed_in.user_id, method)
    except InvalidInput as bad:
        return await _billing_page(request, signed_in, status_code=400, error=refusal_text(bad))
    except (PaymentProviderError, PaymentsNotConfigured):
        return await _billing_page(request, signed_in, status_code=502, error=PROVIDER_FAILED)
    return RedirectResponse("/settings/billing?saved=card", status_code=303)


def _not_yours(request: Request, signed_in: SignedIn) -> HTMLResponse:
    # Someone else's purchase and no purchase look alike: one answer for both.
    return page(
        request,
        "message.html",
        signed_in,
        status_code=404,
        title="No such purchase",
        message="There is no purchase with this number on your account.",
        back="/settings/billing",
    )


@router.get("/settings/billing/purchases/{purchaseId}")
async def receipt(
    request: Request,
    signed_in: PageUser,
    purchase_id: Annotated[str, Path(alias="purchaseId")],
) -> Response:
    if signed_in.user_id is None:
        return no_wallet(request, signed_in)
    payments = get_services(request).payments
    if len(purchase_id) > MAX_PURCHASE_ID_LENGTH:
        return _not_yours(request, signed_in)
    try:
        purchase = await payments.get_purchase(purchase_id)
    except NotFound:
        return _not_yours(request, signed_in)
    if purchase.user_id != signed_in.user_id:
        return _not_yours(request, signed_in)
    pack = None
    if purchase.pack_id is not None:
        pack = await (await payments.packs()).get(purchase.pack_id)
    return page(request, "receipt.html", signed_in, purchase=purchase, pack=pack)
