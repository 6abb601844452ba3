"""The signed-in user's token pages: the balance and buying tokens (``/tokens``), the
live balance (``/tokens/events``), and, through the routers it includes, the history,
usage and billing pages. Every page depends on ``PageUser``; every POST on
``CsrfUser`` (decision 17)."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.config import Settings
from tokenbank.errors import InvalidInput, NotFound
from tokenbank.events.service import Alert
from tokenbank.payments.errors import PaymentProviderError, PaymentsNotConfigured
from tokenbank.payments.purchases import Order
from tokenbank.web import routes_billing, routes_history
from tokenbank.web.auth import CsrfUser, PageUser, gone_or_signed_out
from tokenbank.web.live import balance_events
from tokenbank.web.templating import page
from tokenbank.web.wallet_pages import no_wallet, parse_dollars, reads, refusal_text

router = APIRouter(include_in_schema=False)
router.include_router(routes_history.router)
router.include_router(routes_billing.router)

GRANTS_SHOWN = 50
ALERTS_SHOWN = 5
PLOTLY_PATH = "/static/vendor/plotly.min.js"
PAYMENTS_OFF = "Payments are not available right now: buying tokens is switched off."
PROVIDER_FAILED = "Stripe could not start the checkout. Nothing was charged: try again shortly."


def alert_level(available: int, settings: Settings) -> str | None:
    """The low-balance alerts: critical (red) below the critical threshold, a
    warning (yellow) below the low-balance one."""
    if available < settings.critical_balance_tokens:
        return "critical"
    if available < settings.low_balance_tokens:
        return "warning"
    return None


def payments_on(settings: Settings) -> bool:
    return settings.stripe_secret_key is not None


def _site(settings: Settings) -> str:
    return settings.public_url.rstrip("/")


async def _tokens_page(
    request: Request,
    signed_in: SignedIn,
    *,
    status_code: int = 200,
    error: str | None = None,
    amount: str = "",
) -> HTMLResponse:
    services = get_services(request)
    user_id = signed_in.user_id
    info = None if user_id is None else await services.tokens.get_balance(user_id)
    if user_id is None or info is None:
        return no_wallet(request, signed_in, status_code=status_code)
    settings = services.settings
    packs = await (await services.payments.packs()).list_packs(active_only=True)
    return page(
        request,
        "tokens.html",
        signed_in,
        status_code=status_code,
        info=info,
        grants=await services.tokens.get_grants(user_id, limit=GRANTS_SHOWN) or [],
        grants_shown=GRANTS_SHOWN,
        alert=alert_level(info.available, settings),
        recent_alerts=await services.webhooks.user_alerts(user_id, limit=ALERTS_SHOWN),
        settings=settings,
        packs=packs,
        payments_on=payments_on(settings),
        tokens_per_usd=(await services.pricing.settings()).tokens_per_usd,
        canceled=request.query_params.get("canceled") == "1",
        error=error,
        amount=amount,
    )


@router.get("/tokens")
async def tokens_page(request: Request, signed_in: PageUser) -> Response:
    return await _tokens_page(request, signed_in)


async def _order(request: Request, pack_id: str, amount: str) -> Order:
    services = get_services(request)
    if pack_id.strip():
        return await services.payments.order(pack_id=pack_id.strip()[:64], amount_cents=None)
    if amount.strip():
        cents = parse_dollars(amount, services.settings.minimum_purchase_cents)
        return await services.payments.order(pack_id=None, amount_cents=cents)
    raise InvalidInput("packId", "choose a pack, or enter an amount in dollars")


@router.post("/tokens/buy")
async def buy(
    request: Request,
    signed_in: CsrfUser,
    pack_id: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
) -> Response:
    """Start a Stripe Checkout for a pack or an amount; 303 to Stripe's page."""
    settings = get_services(request).settings
    if signed_in.user_id is None:
        return no_wallet(request, signed_in, status_code=400)
    try:
        order = await _order(request, pack_id, amount)
        if not payments_on(settings):
            raise PaymentsNotConfigured(PAYMENTS_OFF)
        started = await get_services(request).payments.start_checkout(
            signed_in.user_id,
            order,
            success_url=_site(settings) + "/tokens/bought?session={CHECKOUT_SESSION_ID}",
            cancel_url=_site(settings) + "/tokens?canceled=1",
        )
    except InvalidInput as bad:
        return await _tokens_page(
            request, signed_in, status_code=400, error=refusal_text(bad), amount=amount[:32]
        )
    except NotFound:
        message = "That pack is not on sale: choose another."
        return await _tokens_page(request, signed_in, status_code=400, error=message)
    except PaymentsNotConfigured:
        return await _tokens_page(request, signed_in, status_code=503, error=PAYMENTS_OFF)
    except PaymentProviderError:
        return await _tokens_page(request, signed_in, status_code=502, error=PROVIDER_FAILED)
    return RedirectResponse(started.url, status_code=303)


@router.get("/tokens/bought")
async def bought(request: Request, signed_in: PageUser, session: str = "") -> Response:
    """Where Stripe sends the buyer back: the webhook credits the purchase, and the
    balance on this page follows it live."""
    services = get_services(request)
    user_id = signed_in.user_id
    info = None if user_id is None else await services.tokens.get_balance(user_id)
    if user_id is None or info is None:
        return no_wallet(request, signed_in)
    recent = await services.payments.list_purchases(user_id=user_id, limit=20)
    purchase = next(
        (p for p in recent if session and p.stripe_checkout_session_id == session), None
    )
    return page(
        request,
        "tokens_bought.html",
        signed_in,
        info=info,
        purchase=purchase,
        alert=alert_level(info.available, services.settings),
        settings=services.settings,
    )


@router.get("/tokens/events")
async def events(request: Request, signed_in: PageUser) -> Response:
    """``event: balance`` whenever the balance or what is held changes."""
    if signed_in.user_id is None:
        # 204 tells EventSource to stop: there is no wallet to follow.
        return Response(status_code=204)
    ended = gone_or_signed_out(request)
    user_id = signed_in.user_id
    webhooks = get_services(request).webhooks

    async def alerts() -> list[Alert]:
        return await webhooks.user_alerts(user_id, limit=ALERTS_SHOWN)

    stream = balance_events(reads(request), user_id, disconnected=ended, alerts=alerts)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@cache
def _plotly() -> tuple[bytes, str] | None:
    """plotly.js as the plotly wheel ships it (read once), and its ETag; None when
    the package is missing (the usage page still has its tables)."""
    spec = importlib.util.find_spec("plotly")  # found, not imported: its Python is unused
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        return None
    body = path.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@router.get(PLOTLY_PATH)
async def plotly_js(request: Request) -> Response:
    found = _plotly()
    if found is None:
        return Response("plotly is not installed", status_code=404, media_type="text/plain")
    body, etag = found
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript", headers=headers)
