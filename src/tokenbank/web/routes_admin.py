"""The admin dashboard (the billing defaults' "/admin/tokens"): the figures, the wallets with their
filters, one wallet with a grant form, and the audit log. Settings, packs, plans and
apps are in ``routes_admin_config`` and come in with this router.

Admins and superadmins see every page; only a superadmin changes anything, with the
session's CSRF token, and every change is written to the audit log (decision 17).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.config import MAX_DESCRIPTION_LENGTH
from tokenbank.errors import InvalidInput, TokenBankError
from tokenbank.ledger.repository.admin_stats import NO_PLAN, WalletFilter
from tokenbank.validation import validate_user_id
from tokenbank.web import routes_admin_config, routes_admin_pricing, routes_admin_webhooks
from tokenbank.web.admin_common import SuperadminCsrf, audit, done, message, path_part, refused
from tokenbank.web.admin_forms import (
    filter_query,
    form_fields,
    page_number,
    required_number,
    required_text,
    wallet_filter,
)
from tokenbank.web.admin_reads import load_dashboard, wallet_listing, wallet_owner
from tokenbank.web.auth import PageAdmin
from tokenbank.web.routes_tokens import PLOTLY_PATH
from tokenbank.web.templating import page

router = APIRouter(prefix="/admin", include_in_schema=False)
router.include_router(routes_admin_config.router)
router.include_router(routes_admin_pricing.router)
router.include_router(routes_admin_webhooks.router)

DASHBOARD_ROWS = 10
LIST_ROWS = 25
LEDGER_ROWS = 25
PURCHASE_ROWS = 20
GRANT_ROWS = 50
AUDIT_ROWS = 50
ADMIN_GRANT = "admin_grant"
# The idempotency scope of the grant form's keys: a colon, which no app slug has, keeps
# them apart from every app's keys (decision 4).
GRANT_SCOPE = "web:admin-grant"
GRANT_KEY_LENGTH = 64


async def _plan_names(request: Request) -> list[str]:
    return [plan.name for plan in await get_services(request).plans.list_plans()]


# --- the dashboard -------------------------------------------------------------------------


@router.get("/tokens")
async def dashboard(request: Request, signed_in: PageAdmin) -> Response:
    services = get_services(request)
    # History database: the read replica when one is configured.
    reads = await services.tokens.reads()
    figures = await load_dashboard(reads.engine, services.tokens.clock())
    listing = await wallet_listing(reads.engine, WalletFilter(), page=1, size=DASHBOARD_ROWS)
    return page(
        request,
        "admin_dashboard.html",
        signed_in,
        section="tokens",
        freshness=await reads.freshness(),
        figures=figures,
        chart_days=[{"day": d.day, "used": d.used, "purchased": d.purchased} for d in figures.days],
        listing=listing,
        chosen=WalletFilter(),
        plans=await _plan_names(request),
        no_plan=NO_PLAN,
        more_link="/admin/accounts",
        # Plotly as the user pages serve it from its package (one copy for both).
        plotly_src=PLOTLY_PATH,
    )


# --- wallets -------------------------------------------------------------------------------


@router.get("/accounts")
async def accounts(request: Request, signed_in: PageAdmin) -> Response:
    query = request.query_params
    try:
        chosen = wallet_filter(query)
        number = page_number(query.get("page"))
    except InvalidInput as bad:
        return await _accounts_page(request, signed_in, WalletFilter(), 1, error=str(bad))
    return await _accounts_page(request, signed_in, chosen, number)


async def _accounts_page(
    request: Request,
    signed_in: SignedIn,
    chosen: WalletFilter,
    number: int,
    *,
    error: str | None = None,
) -> HTMLResponse:
    reads = await get_services(request).tokens.reads()
    listing = await wallet_listing(reads.engine, chosen, page=number, size=LIST_ROWS)
    return page(
        request,
        "admin_accounts.html",
        signed_in,
        status_code=400 if error else 200,
        section="accounts",
        freshness=await reads.freshness(),
        listing=listing,
        chosen=chosen,
        filters=filter_query(chosen),
        plans=await _plan_names(request),
        no_plan=NO_PLAN,
        error=error,
    )


@router.get("/accounts/{user_id:path}")
async def account(request: Request, user_id: str, signed_in: PageAdmin) -> Response:
    try:
        number = page_number(request.query_params.get("page"))
    except InvalidInput as bad:
        return message(request, signed_in, "Bad page", str(bad), status_code=400)
    granted = request.query_params.get("granted") == "1"
    return await _account_page(request, signed_in, user_id, ledger_page=number, granted=granted)


async def _account_page(
    request: Request,
    signed_in: SignedIn,
    user_id: str,
    *,
    ledger_page: int = 1,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """One wallet: its figures, grants, a page of its ledger, its purchases."""
    services = get_services(request)
    tokens = services.tokens
    try:
        validate_user_id(user_id)
    except InvalidInput:
        return message(request, signed_in, "Not found", "No such wallet.", status_code=404)
    owner = await wallet_owner(await tokens.engine(), user_id)
    balance = await tokens.get_balance(user_id)
    if owner is None or balance is None:
        return message(request, signed_in, "Not found", "No such wallet.", status_code=404)
    entries = await tokens.get_ledger().get_user_entries(
        user_id, limit=LEDGER_ROWS + 1, offset=(ledger_page - 1) * LEDGER_ROWS
    )
    return page(
        request,
        "admin_account.html",
        signed_in,
        status_code=status_code,
        section="accounts",
        owner=owner,
        balance=balance,
        grants=await tokens.get_grants(user_id, limit=GRANT_ROWS) or [],
        entries=entries[:LEDGER_ROWS],
        # The ledger above is read from the replica when there is one.
        freshness=await (await tokens.reads()).freshness(),
        ledger_page=ledger_page,
        more_entries=len(entries) > LEDGER_ROWS,
        purchases=await services.payments.list_purchases(user_id=user_id, limit=PURCHASE_ROWS),
        # A fresh key per form shown: posting the same form twice grants once.
        grant_key=secrets.token_urlsafe(24),
        **context,
    )


def _grant_terms(fields: dict[str, str]) -> tuple[int, str, str]:
    amount = required_number(fields, "amount", low=1)
    reason = required_text(fields, "reason", max_length=MAX_DESCRIPTION_LENGTH)
    key = required_text(fields, "grant_key", max_length=GRANT_KEY_LENGTH)
    return amount, reason, key


@router.post("/accounts/{user_id:path}/grant")
async def grant(request: Request, user_id: str, signed_in: SuperadminCsrf) -> Response:
    """Grant tokens: one ``admin_grant`` credit (a promotional grant), then its audit
    entry with the balance before and after, as the credit's own entry states them."""
    services = get_services(request)
    fields = await form_fields(request)
    try:
        amount, reason, key = _grant_terms(fields)
    except InvalidInput as bad:
        return await _account_page(
            request, signed_in, user_id, status_code=400, error=str(bad), form=fields
        )
    back = f"/admin/accounts/{path_part(user_id)}"
    if await wallet_owner(await services.tokens.engine(), user_id) is None:
        return message(request, signed_in, "Not found", "No such wallet.", status_code=404)
    try:
        result = await services.tokens.credit(
            user_id,
            amount=amount,
            operation_type=ADMIN_GRANT,
            description=reason,
            metadata={"granted_by": signed_in.email},
            idempotency_key=key,
            idempotency_scope=GRANT_SCOPE,
        )
    except TokenBankError as error:
        return refused(request, signed_in, error, back=back)
    if not result.success or result.new_balance is None:
        return message(
            request, signed_in, "Not granted", result.error or "refused", status_code=409, back=back
        )
    if not result.replayed:  # the same form posted twice: granted and audited once
        await audit(
            services,
            signed_in,
            "wallet.admin_grant",
            user_id,
            {"balance": result.new_balance - amount},
            {
                "balance": result.new_balance,
                "amount": amount,
                "reason": reason,
                "transaction_id": result.transaction_id,
            },
        )
    return done(f"{back}?granted=1")


# --- the audit log -------------------------------------------------------------------------


@router.get("/audit")
async def audit_log(request: Request, signed_in: PageAdmin) -> Response:
    try:
        number = page_number(request.query_params.get("page"))
    except InvalidInput as bad:
        return message(request, signed_in, "Bad page", str(bad), status_code=400)
    rows = await get_services(request).accounts.audit_entries(
        limit=AUDIT_ROWS + 1, offset=(number - 1) * AUDIT_ROWS
    )
    return page(
        request,
        "admin_audit.html",
        signed_in,
        section="audit",
        rows=rows[:AUDIT_ROWS],
        page_number=number,
        has_more=len(rows) > AUDIT_ROWS,
    )
