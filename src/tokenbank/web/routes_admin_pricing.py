"""The admin pages' pricing tables, under /admin/settings: each model's rates (what a
unit of usage costs before the multiplier) and the fixed cost of each operation type.
Everyone with the admin role sees them; only a superadmin changes them, with the
session's CSRF token, and every change is audited with its before and after."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tokenbank.api.state import Services, get_services
from tokenbank.errors import InvalidInput
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.rates import ModelRate
from tokenbank.web.admin_common import SuperadminCsrf, audit, done, refused
from tokenbank.web.admin_forms import form_fields, required_number, required_text, whole_number

router = APIRouter()

SETTINGS_PAGE = "/admin/settings"
MAX_MODEL_LENGTH = 128
MAX_OPERATION_TYPE_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 500


def rate_json(rate: ModelRate) -> dict[str, Any]:
    return {
        "inputTokensPerUnit": decimal_text(rate.input_tokens_per_unit),
        "outputTokensPerUnit": decimal_text(rate.output_tokens_per_unit),
        "imageTokens": rate.image_tokens,
        "source": rate.source,
    }


async def pricing_tables(services: Services) -> dict[str, Any]:
    """What the settings page shows besides the pricing settings."""
    rates = await services.pricing.list_model_rates()
    costs = await services.tokens.get_operation_costs()
    return {"model_rates": rates, "operation_costs": sorted(costs.items())}


async def _rate_of(services: Services, model: str) -> dict[str, Any] | None:
    for rate in await services.pricing.list_model_rates():
        if rate.model == model:
            return rate_json(rate)
    return None


@router.post("/settings/models")
async def set_model_rate(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        model = required_text(fields, "model", max_length=MAX_MODEL_LENGTH)
        before = await _rate_of(services, model)
        rate = await services.pricing.set_model_rate(
            model,
            input_tokens_per_unit=fields.get("input_tokens_per_unit", "").strip(),
            output_tokens_per_unit=fields.get("output_tokens_per_unit", "").strip(),
            image_tokens=whole_number(fields, "image_tokens", low=1),
        )
    except InvalidInput as bad:
        return refused(request, signed_in, bad, back=SETTINGS_PAGE)
    await audit(services, signed_in, "pricing.set_model_rate", rate.model, before, rate_json(rate))
    return done(f"{SETTINGS_PAGE}?saved=1")


@router.post("/settings/models/{model}/delete")
async def delete_model_rate(request: Request, model: str, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    try:
        before = await _rate_of(services, model)
        deleted = await services.pricing.delete_model_rate(model)
    except InvalidInput as bad:
        return refused(request, signed_in, bad, back=SETTINGS_PAGE)
    if deleted:
        after = await _rate_of(services, model)  # the shipped rate, if there is one
        await audit(services, signed_in, "pricing.delete_model_rate", model, before, after)
    return done(f"{SETTINGS_PAGE}?saved=1")


@router.post("/settings/costs")
async def set_operation_cost(request: Request, signed_in: SuperadminCsrf) -> Response:
    services = get_services(request)
    fields = await form_fields(request)
    try:
        operation_type = required_text(
            fields, "operation_type", max_length=MAX_OPERATION_TYPE_LENGTH
        )
        tokens = required_number(fields, "tokens", low=1)
        before = (await services.tokens.get_operation_costs()).get(operation_type)
        await services.tokens.set_operation_cost(operation_type, tokens)
    except InvalidInput as bad:
        return refused(request, signed_in, bad, back=SETTINGS_PAGE)
    if before != tokens:
        await audit(
            services,
            signed_in,
            "pricing.set_operation_cost",
            operation_type,
            None if before is None else {"tokens": before},
            {"tokens": tokens},
        )
    return done(f"{SETTINGS_PAGE}?saved=1")


@router.post("/settings/costs/{operation_type}/delete")
async def delete_operation_cost(
    request: Request, operation_type: str, signed_in: SuperadminCsrf
) -> Response:
    services = get_services(request)
    try:
        before = (await services.tokens.get_operation_costs()).get(operation_type)
        deleted = await services.tokens.delete_operation_cost(operation_type)
    except InvalidInput as bad:
        return refused(request, signed_in, bad, back=SETTINGS_PAGE)
    if deleted:
        await audit(
            services,
            signed_in,
            "pricing.delete_operation_cost",
            operation_type,
            {"tokens": before},
            None,
        )
    return done(f"{SETTINGS_PAGE}?saved=1")
