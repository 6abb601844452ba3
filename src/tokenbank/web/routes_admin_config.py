"""The admin pages that edit how tokenbank sells: pricing settings, packs, plans (with
the features, read only) and apps with their keys. Each form goes to the domain's own
service, which validates again; each change is audited with what it was before and
after (never an API key: its display prefix at most).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tokenbank.accounts.service import SignedIn
from tokenbank.api.state import get_services
from tokenbank.apps import keys
from tokenbank.apps.service import AppInfo
from tokenbank.config import MAX_DESCRIPTION_LENGTH
from tokenbank.db.models import ALLOCATION_POLICIES, API_SCOPES
from tokenbank.errors import InvalidInput, TokenBankError
from tokenbank.payments.packs import Pack, PackTerms, validate_pack_id
from tokenbank.plans.service import FeatureView, PlanView, parse_profit_percent
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.schemas import settings_json
from tokenbank.pricing.service import parse_multiplier
from tokenbank.web.admin_common import SuperadminCsrf, audit, changed, done, path_part, refused
from tokenbank.web.admin_forms import (
    checkbox,
    form_fields,
    price_cents,
    required_number,
    required_text,
    text,
    whole_number,
)
from tokenbank.web.admin_reads import plan_stripe_prices
from tokenbank.web.auth import PageAdmin
from tokenbank.web.routes_admin_pricing import pricing_tables
from tokenbank.web.templating import page

router = APIRouter()

# A rotated app's old keys may keep working for at most this long.
MAX_GRACE_SECONDS = 30 * 86_400
MAX_PLAN_NAME_LENGTH = 64
MAX_STRIPE_ID_LENGTH = 255


# --- pricing settings ------------------------------------------------------------------


@router.get("/settings")
async def settings_page(request: Request, signed_in: PageAdmin) -> Response:
    return await _settings_page(request, signed_in, saved=request.query_params.get("saved"))


async def _settings_page(
    request: Request, signed_in: SignedIn, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    services = get_services(request)
    current = await services.pricing.settings()
    return page(
        request,
        "admin_settings.html",
        signed_in,
        status_code=status_code,
        section="settings",
        current=settings_json(current),
        **(await pricing_tables(services)),
        **context,
    )


@router.post("/settings")
async def save_settings(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        multiplier = decimal_text(parse_multiplier(fields.get("token_multiplier", "")))
        per_usd = required_number(fields, "tokens_per_usd", low=1)
    except InvalidInput as bad:
        return await _settings_page(
            request, signed_in, status_code=400, error=str(bad), form=fields
        )
    before = settings_json(await services.pricing.settings())
    wanted = {"tokenMultiplier": multiplier, "tokensPerUsd": per_usd}
    old, new = changed(before, wanted)
    if new:
        after = await services.pricing.update_settings(
            token_multiplier=new.get("tokenMultiplier"), tokens_per_usd=new.get("tokensPerUsd")
        )
        old, new = changed(before, settings_json(after))
        await audit(services, signed_in, "pricing.update_settings", "settings", old, new)
    return done("/admin/settings?saved=1")


# --- packs -------------------------------------------------------------------------------


async def _packs_page(
    request: Request, signed_in: SignedIn, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    packs = await (await get_services(request).payments.packs()).list_packs(active_only=False)
    return page(
        request,
        "admin_packs.html",
        signed_in,
        status_code=status_code,
        section="packs",
        packs=packs,
        pack_forms={pack.id: _pack_form(pack) for pack in packs},
        **context,
    )


@router.get("/packs")
async def packs_page(request: Request, signed_in: PageAdmin) -> Response:
    return await _packs_page(request, signed_in, saved=request.query_params.get("saved"))


def _pack_form(pack: Pack) -> dict[str, Any]:
    """A pack's terms as its edit form shows them (the price in the main unit)."""
    cents = pack.terms.price_cents
    return {**asdict(pack.terms), "price": f"{cents // 100}.{cents % 100:02d}"}


def _pack_terms(fields: dict[str, str]) -> PackTerms:
    """A pack's every term from its form (PackTerms checks them again)."""
    return PackTerms(
        name=required_text(fields, "name", max_length=100),
        tokens=required_number(fields, "tokens", low=1),
        price_cents=price_cents(fields, "price"),
        currency=(text(fields, "currency", max_length=3) or "usd").lower(),
        description=text(fields, "description", max_length=500),
        stripe_price_id=text(fields, "stripe_price_id", max_length=MAX_STRIPE_ID_LENGTH),
        active=checkbox(fields, "active"),
        popular=checkbox(fields, "popular"),
        sort_order=whole_number(fields, "sort_order", high=1_000_000) or 0,
    )


@router.post("/packs")
async def create_pack(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        pack = Pack(validate_pack_id(fields.get("pack_id", "").strip()), _pack_terms(fields))
        await (await services.payments.packs()).create(pack)
    except InvalidInput as bad:
        return await _packs_page(request, signed_in, status_code=400, error=str(bad), form=fields)
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/packs")
    await audit(services, signed_in, "pack.create", pack.id, None, asdict(pack.terms))
    return done("/admin/packs?saved=1")


@router.post("/packs/{pack_id}")
async def edit_pack(request: Request, pack_id: str, signed_in: SuperadminCsrf) -> Response:
    fields = await form_fields(request)
    try:
        terms = _pack_terms(fields)
    except InvalidInput as bad:
        return await _packs_page(
            request, signed_in, status_code=400, error=str(bad), form=fields, editing=pack_id
        )
    return await _change_pack(request, signed_in, pack_id, asdict(terms), "pack.update")


@router.post("/packs/{pack_id}/deactivate")
async def deactivate_pack(request: Request, pack_id: str, signed_in: SuperadminCsrf) -> Response:
    return await _change_pack(request, signed_in, pack_id, {"active": False}, "pack.deactivate")


@router.post("/packs/{pack_id}/activate")
async def activate_pack(request: Request, pack_id: str, signed_in: SuperadminCsrf) -> Response:
    return await _change_pack(request, signed_in, pack_id, {"active": True}, "pack.activate")


async def _change_pack(
    request: Request, signed_in: SignedIn, pack_id: str, wanted: dict[str, Any], action: str
) -> Response:
    services = get_services(request)
    packs = await services.payments.packs()
    try:
        before = asdict((await packs.get(pack_id)).terms)
        old, new = changed(before, wanted)
        if new:
            await packs.update(pack_id, new)
    except InvalidInput as bad:
        return await _packs_page(
            request, signed_in, status_code=400, error=str(bad), editing=pack_id
        )
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/packs")
    if new:
        await audit(services, signed_in, action, pack_id, old, new)
    return done("/admin/packs?saved=1")


# --- plans and features ---------------------------------------------------------------------


def plan_values(plan: PlanView, stripe_price_id: str | None) -> dict[str, Any]:
    """What the plan form edits, as the audit log records it."""
    return {
        "description": plan.description,
        "monthly_allocation_tokens": plan.monthly_allocation_tokens,
        "profit_percent": decimal_text(plan.profit_percent),
        "allocation_policy": plan.allocation_policy,
        "rollover_cap_tokens": plan.rollover_cap_tokens,
        "stripe_price_id": stripe_price_id,
    }


async def _plans_page(
    request: Request, signed_in: SignedIn, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    services = get_services(request)
    prices = await plan_stripe_prices(await services.tokens.engine())
    plans = await services.plans.list_plans()
    return page(
        request,
        "admin_plans.html",
        signed_in,
        status_code=status_code,
        section="plans",
        plans=[(plan, plan_values(plan, prices.get(plan.name))) for plan in plans],
        features=await services.plans.list_features(),
        policies=ALLOCATION_POLICIES,
        **context,
    )


@router.get("/plans")
async def plans_page(request: Request, signed_in: PageAdmin) -> Response:
    return await _plans_page(request, signed_in, saved=request.query_params.get("saved"))


def _plan_form(fields: dict[str, str]) -> dict[str, Any]:
    """The plan form's fields as PlanService takes them (it validates them again)."""
    policy = fields.get("allocation_policy", "")
    if policy not in ALLOCATION_POLICIES:
        raise InvalidInput("allocation_policy", f"one of {', '.join(ALLOCATION_POLICIES)}")
    return {
        "description": text(fields, "description", max_length=MAX_DESCRIPTION_LENGTH),
        "monthly_allocation_tokens": required_number(fields, "monthly_allocation_tokens"),
        "profit_percent": fields.get("profit_percent", "").strip() or "0",
        "allocation_policy": policy,
        "rollover_cap_tokens": whole_number(fields, "rollover_cap_tokens"),
    }


@router.post("/plans")
async def create_plan(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        name = required_text(fields, "name", max_length=MAX_PLAN_NAME_LENGTH)
        plan = await services.plans.create_plan(name, **_plan_form(fields))
    except InvalidInput as bad:
        return await _plans_page(request, signed_in, status_code=400, error=str(bad), form=fields)
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/plans")
    await audit(services, signed_in, "plan.create", plan.name, None, plan_values(plan, None))
    return done("/admin/plans?saved=1")


@router.post("/plans/{name}")
async def edit_plan(request: Request, name: str, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    prices = await plan_stripe_prices(await services.tokens.engine())
    try:
        wanted = _plan_form(fields)
        wanted["stripe_price_id"] = text(fields, "stripe_price_id", max_length=255)
        _check_price_free(prices, name, wanted["stripe_price_id"])
        before = plan_values(await services.plans.get_plan(name), prices.get(name))
        wanted["profit_percent"] = _same_decimal(wanted["profit_percent"])
        old, new = changed(before, wanted)
        if new:
            await services.plans.update_plan(name, **new)
    except InvalidInput as bad:
        return await _plans_page(
            request, signed_in, status_code=400, error=str(bad), form=fields, editing=name
        )
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/plans")
    if new:
        await audit(services, signed_in, "plan.update", name, old, new)
    return done("/admin/plans?saved=1")


def _same_decimal(value: str) -> str:
    """A profit percentage as the plan stores it ("10.0" is "10"), so that an unchanged
    field does not count as a change."""
    return decimal_text(parse_profit_percent(value))


def _check_price_free(prices: dict[str, str | None], name: str, price: str | None) -> None:
    """One Stripe price sells one plan (a unique index): say so before the database
    refuses it."""
    if price is not None and any(
        plan != name and stripe_price == price for plan, stripe_price in prices.items()
    ):
        raise InvalidInput("stripe_price_id", "another plan is sold at this Stripe price")


# --- features ----------------------------------------------------------------------------------


def _feature_values(feature: FeatureView) -> dict[str, Any]:
    return {
        "name": feature.name,
        "rule": feature.rule.model_dump(mode="json"),
        "min_balance_tokens": feature.min_balance_tokens,
        "hold_tokens": feature.hold_tokens,
        "profit_percent": None if feature.profit_percent is None else str(feature.profit_percent),
    }


def _feature_form(fields: dict[str, str]) -> dict[str, Any]:
    """The feature form as PlanService takes it (it validates the rule and the rest)."""
    try:
        rule = json.loads(fields.get("rule", ""))
    except json.JSONDecodeError:
        raise InvalidInput("rule", "the pricing rule as JSON") from None
    if not isinstance(rule, dict):
        raise InvalidInput("rule", "the pricing rule as a JSON object")
    profit = fields.get("profit_percent", "").strip()
    return {
        "name": required_text(fields, "name", max_length=200),
        "rule": rule,
        "min_balance_tokens": whole_number(fields, "min_balance_tokens") or 0,
        "hold_tokens": whole_number(fields, "hold_tokens"),
        "profit_percent": profit or None,
    }


@router.post("/features/{feature_id}")
async def edit_feature(request: Request, feature_id: str, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        wanted = _feature_form(fields)
        before = _feature_values(await services.plans.get_feature(feature_id))
        updated = await services.plans.update_feature(feature_id, **wanted)
    except InvalidInput as bad:
        return await _plans_page(request, signed_in, status_code=400, error=str(bad))
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/plans")
    old, new = changed(before, _feature_values(updated))
    if new:
        await audit(services, signed_in, "feature.update", feature_id, old, new)
    return done("/admin/plans?saved=1")


# --- apps and their keys -----------------------------------------------------------------------


def _live_prefixes(app: AppInfo | None) -> list[str]:
    return [] if app is None else [key.display_prefix for key in app.keys if key.active]


async def _app(request: Request, slug: str) -> AppInfo | None:
    apps = await get_services(request).apps.list_apps()
    return next((app for app in apps if app.slug == slug), None)


async def _apps_page(
    request: Request, signed_in: SignedIn, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return page(
        request,
        "admin_apps.html",
        signed_in,
        status_code=status_code,
        section="apps",
        apps=await get_services(request).apps.list_apps(),
        scopes=API_SCOPES,
        **context,
    )


@router.get("/apps")
async def apps_page(request: Request, signed_in: PageAdmin) -> Response:
    return await _apps_page(request, signed_in, saved=request.query_params.get("saved"))


def _key_page(
    request: Request, signed_in: SignedIn, slug: str, key: str, *, status_code: int
) -> HTMLResponse:
    """The new key, shown this once (the page is never cached: see ``page``)."""
    return page(
        request,
        "admin_app_key.html",
        signed_in,
        status_code=status_code,
        section="apps",
        slug=slug,
        key=key,
    )


@router.post("/apps")
async def create_app(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    chosen = [scope for scope in API_SCOPES if checkbox(fields, f"scope_{scope}")]
    try:
        slug = required_text(fields, "slug", max_length=64)
        name = text(fields, "name", max_length=200)
        info, key = await services.apps.create_app(slug, scopes=chosen, name=name)
    except InvalidInput as bad:
        return await _apps_page(request, signed_in, status_code=400, error=str(bad), form=fields)
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/apps")
    after = {"name": info.name, "scopes": chosen, "keys": [keys.display_prefix(key)]}
    await audit(services, signed_in, "app.create", slug, None, after)
    return _key_page(request, signed_in, slug, key, status_code=201)


@router.post("/apps/{slug}/rotate")
async def rotate_key(request: Request, slug: str, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        grace = whole_number(fields, "grace_seconds", high=MAX_GRACE_SECONDS) or 0
        before = _live_prefixes(await _app(request, slug))
        key = await services.apps.rotate_key(slug, old_key_expires_in_seconds=grace)
    except InvalidInput as bad:
        return await _apps_page(request, signed_in, status_code=400, error=str(bad))
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/apps")
    after = {"keys": _live_prefixes(await _app(request, slug)), "old_keys_expire_in": grace}
    await audit(services, signed_in, "app.rotate_key", slug, {"keys": before}, after)
    return _key_page(request, signed_in, slug, key, status_code=200)


@router.post("/apps/{slug}/revoke")
async def revoke_keys(request: Request, slug: str, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        prefix = text(fields, "key", max_length=keys.DISPLAY_PREFIX_LENGTH)
        before = _live_prefixes(await _app(request, slug))
        revoked = await services.apps.revoke_keys(slug, display_prefix=prefix)
    except InvalidInput as bad:
        return await _apps_page(request, signed_in, status_code=400, error=str(bad))
    except TokenBankError as error:
        return refused(request, signed_in, error, back="/admin/apps")
    if revoked:
        after = {"keys": _live_prefixes(await _app(request, slug)), "revoked": revoked}
        await audit(services, signed_in, "app.revoke_keys", slug, {"keys": before}, after)
    return done(f"/admin/apps?saved=1#app-{path_part(slug)}")
