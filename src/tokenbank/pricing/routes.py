"""The pricing admin routes: per-model rates and the global pricing settings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request

from tokenbank.api.admin import admin_router
from tokenbank.api.auth import AdminKey
from tokenbank.api.errors import ApiError
from tokenbank.api.responses import WITH_BODY, WITH_INPUT, errors
from tokenbank.api.state import get_services
from tokenbank.pricing.schemas import ModelRateUpdate, SettingsUpdate, rate_json, settings_json

router = admin_router()

# A model name may hold a slash ("models/gemini-pro").
ModelPath = Annotated[str, Path(min_length=1, max_length=128)]


# --- model prices and settings -----------------------------------------------------------


@router.get("/models", summary="Model rates: the shipped table with the overrides")
async def list_models(request: Request, principal: AdminKey) -> dict[str, Any]:
    rates = await get_services(request).pricing.list_model_rates()
    return {"data": [rate_json(rate) for rate in rates]}


@router.put(
    "/models/{model:path}",
    summary="Set one model's rates (an override)",
    responses=errors(WITH_BODY),
)
async def set_model(
    request: Request, model: ModelPath, body: ModelRateUpdate, principal: AdminKey
) -> dict[str, Any]:
    rate = await get_services(request).pricing.set_model_rate(
        model,
        input_tokens_per_unit=body.input_tokens_per_unit,
        output_tokens_per_unit=body.output_tokens_per_unit,
        image_tokens=body.image_tokens,
    )
    return {"data": rate_json(rate)}


@router.delete(
    "/models/{model:path}",
    summary="Remove a model's override (shipped rates return)",
    responses=errors(WITH_INPUT, 404),
)
async def delete_model(request: Request, model: ModelPath, principal: AdminKey) -> dict[str, Any]:
    if not await get_services(request).pricing.delete_model_rate(model):
        raise ApiError(404, f"No override is set for model {model!r}", code="model_not_found")
    return {"data": {"model": model, "deleted": True}}


@router.get("/settings", summary="Global pricing settings")
async def get_settings(request: Request, principal: AdminKey) -> dict[str, Any]:
    return {"data": settings_json(await get_services(request).pricing.settings())}


@router.patch("/settings", summary="Change global pricing settings", responses=errors(WITH_BODY))
async def update_settings(
    request: Request, body: SettingsUpdate, principal: AdminKey
) -> dict[str, Any]:
    settings = await get_services(request).pricing.update_settings(
        token_multiplier=body.token_multiplier, tokens_per_usd=body.tokens_per_usd
    )
    return {"data": settings_json(settings)}
