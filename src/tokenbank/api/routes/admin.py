"""The admin JSON API: plans, features, users' plans and status, costs, model prices,
settings and grants. Needs a key with the ``admin`` scope.

Dialect A envelopes: ``{"data": ...}``, errors ``{"error": ..., ...}``. Field names
are camelCase on the wire (``monthlyAllocationTokens``); requests may also use
snake_case (``monthly_allocation_tokens``). Decimals (profit percentages, rates, the
token multiplier) are answered as strings and accepted as strings or whole numbers,
never as floats, so that no binary rounding enters a price.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from tokenbank.api.auth import AdminKey
from tokenbank.api.errors import ApiError
from tokenbank.api.idempotency import idempotency_key
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, WITH_INPUT, errors
from tokenbank.api.routes.tokens import operation_data, settled
from tokenbank.api.schemas import Description, ReferenceId, Tokens, UserId
from tokenbank.api.state import Services, get_services
from tokenbank.apps.service import SLUG_PATTERN
from tokenbank.config import MAX_DESCRIPTION_LENGTH, MAX_USER_ID_LENGTH
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.operations import OPERATION_TYPE_PATTERN
from tokenbank.ledger.results import BalanceInfo
from tokenbank.plans.service import FeatureView, PlanView
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.rates import ModelRate
from tokenbank.pricing.rules import rule_json
from tokenbank.pricing.service import PricingSettings

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=errors(AUTHENTICATED))

UserIdPath = Annotated[str, Path(alias="userId", min_length=1, max_length=MAX_USER_ID_LENGTH)]
FeatureIdPath = Annotated[str, Path(alias="featureId", min_length=1, max_length=128)]
PlanPath = Annotated[str, Path(min_length=1, max_length=64)]
# Documented (the services check them and answer 400): what each identifier may be.
OPERATION_SCHEMA = {"pattern": OPERATION_TYPE_PATTERN.pattern}
SLUG_SCHEMA = {"pattern": SLUG_PATTERN.pattern}
OperationPath = Annotated[
    str, Path(min_length=1, max_length=64, json_schema_extra=OPERATION_SCHEMA)
]
# A model name may hold a slash ("models/gemini-pro").
ModelPath = Annotated[str, Path(min_length=1, max_length=128)]
Decimalish = StrictInt | Annotated[str, Field(min_length=1, max_length=32)]
FeatureIds = Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=1_000)]


class AdminModel(BaseModel):
    """camelCase on the wire, snake_case accepted; strict types; unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
    )


class PlanCreate(AdminModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: Description = None
    monthly_allocation_tokens: Annotated[StrictInt, Field(ge=0)] = 0
    profit_percent: Decimalish = 0
    features: FeatureIds = Field(default_factory=list)


class PatchModel(AdminModel):
    """A PATCH body: only the fields sent change.

    Fields that cannot be cleared may be left out but not sent as null (the document
    says so: ``SkipJsonSchema`` keeps null out of their schema).
    """

    not_null: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in self.not_null:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{to_camel(name)} may be left out, but not null")
        return self


class PlanUpdate(PatchModel):
    """Only the fields sent change; null clears the description."""

    not_null = ("monthly_allocation_tokens", "profit_percent", "features")

    description: Description = None
    monthly_allocation_tokens: Annotated[StrictInt, Field(ge=0)] | SkipJsonSchema[None] = None
    profit_percent: Decimalish | SkipJsonSchema[None] = None
    features: FeatureIds | SkipJsonSchema[None] = None


class FeatureCreate(AdminModel):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    rule: dict[str, Any]
    min_balance_tokens: Annotated[StrictInt, Field(ge=0)] = 0
    hold_tokens: Tokens | None = None
    profit_percent: Decimalish | None = None
    app: (
        Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=SLUG_SCHEMA)] | None
    ) = None


class FeatureUpdate(PatchModel):
    """Only the fields sent change; null clears holdTokens, profitPercent or app."""

    not_null = ("name", "rule", "min_balance_tokens")

    name: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    rule: dict[str, Any] | SkipJsonSchema[None] = None
    min_balance_tokens: Annotated[StrictInt, Field(ge=0)] | SkipJsonSchema[None] = None
    hold_tokens: Tokens | None = None
    profit_percent: Decimalish | None = None
    app: (
        Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=SLUG_SCHEMA)] | None
    ) = None


class UserPlanUpdate(AdminModel):
    plan: Annotated[str, Field(min_length=1, max_length=64)] | None


WALLET_STATUSES = ("active", "suspended", "closed")


class UserStatusUpdate(AdminModel):
    status: Annotated[
        str, Field(min_length=1, max_length=16, json_schema_extra={"enum": list(WALLET_STATUSES)})
    ]


class CostUpdate(AdminModel):
    tokens: Tokens
    description: Annotated[str | None, Field(max_length=MAX_DESCRIPTION_LENGTH)] = None


class ModelRateUpdate(AdminModel):
    input_tokens_per_unit: Decimalish
    output_tokens_per_unit: Decimalish
    image_tokens: Tokens | None = None


class SettingsUpdate(AdminModel):
    token_multiplier: Decimalish | None = None
    tokens_per_usd: Tokens | None = None


class GrantRequest(AdminModel):
    user_id: UserId
    amount: Tokens
    reason: Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION_LENGTH)]
    reference_id: ReferenceId = None


# --- views -------------------------------------------------------------------------------


def plan_json(plan: PlanView) -> dict[str, Any]:
    return {
        "name": plan.name,
        "description": plan.description,
        "monthlyAllocationTokens": plan.monthly_allocation_tokens,
        "profitPercent": decimal_text(plan.profit_percent),
        "features": list(plan.features),
        "createdAt": plan.created_at.isoformat(),
        "updatedAt": plan.updated_at.isoformat(),
    }


def feature_json(feature: FeatureView) -> dict[str, Any]:
    profit = feature.profit_percent
    return {
        "id": feature.id,
        "name": feature.name,
        "app": feature.app,
        "minBalanceTokens": feature.min_balance_tokens,
        "holdTokens": feature.hold_tokens,
        "profitPercent": None if profit is None else decimal_text(profit),
        "rule": rule_json(feature.rule),
        "pricingVersion": feature.pricing_version,
        "createdAt": feature.created_at.isoformat(),
        "updatedAt": feature.updated_at.isoformat(),
    }


def rate_json(rate: ModelRate) -> dict[str, Any]:
    return {
        "model": rate.model,
        "inputTokensPerUnit": decimal_text(rate.input_tokens_per_unit),
        "outputTokensPerUnit": decimal_text(rate.output_tokens_per_unit),
        "imageTokens": rate.image_tokens,
        "source": rate.source,
    }


def settings_json(settings: PricingSettings) -> dict[str, Any]:
    return {
        "tokenMultiplier": decimal_text(settings.token_multiplier),
        "tokensPerUsd": settings.tokens_per_usd,
    }


def wallet_json(info: BalanceInfo) -> dict[str, Any]:
    return {
        "userId": info.user_id,
        "balance": info.tokens_balance,
        "available": info.available,
        "held": info.held,
        "spent": info.tokens_spent,
        "status": info.status,
        "plan": info.tier,
    }


def _services(request: Request) -> Services:
    return get_services(request)


def _given(body: BaseModel) -> dict[str, Any]:
    """The fields a PATCH body sent (None among them clears an optional field)."""
    return {name: getattr(body, name) for name in body.model_fields_set}


# --- plans -------------------------------------------------------------------------------


@router.get("/plans", summary="List plans with their features")
async def list_plans(request: Request, principal: AdminKey) -> dict[str, Any]:
    return {"data": [plan_json(plan) for plan in await _services(request).plans.list_plans()]}


@router.post(
    "/plans", status_code=201, summary="Create a plan", responses=errors(WITH_BODY, 404, 409)
)
async def create_plan(request: Request, body: PlanCreate, principal: AdminKey) -> dict[str, Any]:
    plan = await _services(request).plans.create_plan(
        body.name,
        description=body.description,
        monthly_allocation_tokens=body.monthly_allocation_tokens,
        profit_percent=body.profit_percent,
        features=body.features,
    )
    return {"data": plan_json(plan)}


@router.get("/plans/{name}", summary="One plan", responses=errors(WITH_INPUT, 404))
async def get_plan(request: Request, name: PlanPath, principal: AdminKey) -> dict[str, Any]:
    return {"data": plan_json(await _services(request).plans.get_plan(name))}


@router.patch(
    "/plans/{name}",
    summary="Change a plan (features replaces the whole set)",
    responses=errors(WITH_BODY, 404),
)
async def update_plan(
    request: Request, name: PlanPath, body: PlanUpdate, principal: AdminKey
) -> dict[str, Any]:
    plan = await _services(request).plans.update_plan(name, **_given(body))
    return {"data": plan_json(plan)}


@router.delete(
    "/plans/{name}", summary="Delete a plan no wallet is on", responses=errors(WITH_INPUT, 404, 409)
)
async def delete_plan(request: Request, name: PlanPath, principal: AdminKey) -> dict[str, Any]:
    await _services(request).plans.delete_plan(name)
    return {"data": {"name": name, "deleted": True}}


@router.put(
    "/plans/{name}/features/{featureId}",
    summary="Add a feature to a plan",
    responses=errors(WITH_BODY, 404),
)
async def add_plan_feature(
    request: Request, name: PlanPath, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    plan = await _services(request).plans.add_feature_to_plan(name, feature_id)
    return {"data": plan_json(plan)}


@router.delete(
    "/plans/{name}/features/{featureId}",
    summary="Remove a feature from a plan",
    responses=errors(WITH_INPUT, 404),
)
async def remove_plan_feature(
    request: Request, name: PlanPath, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    plan = await _services(request).plans.remove_feature_from_plan(name, feature_id)
    return {"data": plan_json(plan)}


# --- features ----------------------------------------------------------------------------


@router.get(
    "/features", summary="List features (optionally of one app)", responses=errors(WITH_INPUT)
)
async def list_features(
    request: Request,
    principal: AdminKey,
    app: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    features = await _services(request).plans.list_features(app=app)
    return {"data": [feature_json(feature) for feature in features]}


@router.post(
    "/features",
    status_code=201,
    summary="Create a feature and its pricing rule",
    responses=errors(WITH_BODY, 404, 409),
)
async def create_feature(
    request: Request, body: FeatureCreate, principal: AdminKey
) -> dict[str, Any]:
    feature = await _services(request).plans.create_feature(
        body.id,
        name=body.name,
        rule=body.rule,
        min_balance_tokens=body.min_balance_tokens,
        hold_tokens=body.hold_tokens,
        profit_percent=body.profit_percent,
        app=body.app,
    )
    return {"data": feature_json(feature)}


@router.get("/features/{featureId}", summary="One feature", responses=errors(WITH_INPUT, 404))
async def get_feature(
    request: Request, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    return {"data": feature_json(await _services(request).plans.get_feature(feature_id))}


@router.patch(
    "/features/{featureId}",
    summary="Change a feature (a new rule bumps its version)",
    responses=errors(WITH_BODY, 404),
)
async def update_feature(
    request: Request, feature_id: FeatureIdPath, body: FeatureUpdate, principal: AdminKey
) -> dict[str, Any]:
    feature = await _services(request).plans.update_feature(feature_id, **_given(body))
    return {"data": feature_json(feature)}


@router.delete(
    "/features/{featureId}",
    summary="Delete a feature (it leaves every plan)",
    responses=errors(WITH_INPUT, 404),
)
async def delete_feature(
    request: Request, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    await _services(request).plans.delete_feature(feature_id)
    return {"data": {"id": feature_id, "deleted": True}}


# --- users -------------------------------------------------------------------------------


@router.put(
    "/users/{userId}/plan",
    summary="Put a user on a plan (null: on none)",
    responses=errors(WITH_BODY, 404),
)
async def set_user_plan(
    request: Request, user_id: UserIdPath, body: UserPlanUpdate, principal: AdminKey
) -> dict[str, Any]:
    plan = await _services(request).plans.set_user_plan(user_id, body.plan)
    return {"data": {"userId": user_id, "plan": plan}}


@router.put(
    "/users/{userId}/status",
    summary="Suspend, close or reactivate a wallet",
    responses=errors(WITH_BODY, 404),
)
async def set_user_status(
    request: Request, user_id: UserIdPath, body: UserStatusUpdate, principal: AdminKey
) -> dict[str, Any]:
    info = await _services(request).tokens.set_wallet_status(user_id, body.status)
    if info is None:
        raise ApiError(404, "User wallet not found", code=ErrorCode.WALLET_NOT_FOUND.value)
    return {"data": wallet_json(info)}


# --- the cost table ----------------------------------------------------------------------


@router.get("/costs", summary="The operation cost table")
async def list_costs(request: Request, principal: AdminKey) -> dict[str, Any]:
    costs = await _services(request).tokens.get_operation_costs()
    return {"data": [{"operation": op, "tokens": costs[op]} for op in sorted(costs)]}


@router.get(
    "/costs/{operation}", summary="What one operation costs", responses=errors(WITH_INPUT, 404)
)
async def get_cost(
    request: Request, operation: OperationPath, principal: AdminKey
) -> dict[str, Any]:
    costs = await _services(request).tokens.get_operation_costs()
    if operation not in costs:
        raise ApiError(404, f"No cost is set for {operation!r}", code="cost_not_found")
    return {"data": {"operation": operation, "tokens": costs[operation]}}


@router.put(
    "/costs/{operation}", summary="Set what one operation costs", responses=errors(WITH_BODY)
)
async def set_cost(
    request: Request, operation: OperationPath, body: CostUpdate, principal: AdminKey
) -> dict[str, Any]:
    await _services(request).tokens.set_operation_cost(
        operation, body.tokens, description=body.description
    )
    return {"data": {"operation": operation, "tokens": body.tokens}}


@router.delete(
    "/costs/{operation}",
    summary="Remove an operation from the cost table",
    responses=errors(WITH_INPUT, 404),
)
async def delete_cost(
    request: Request, operation: OperationPath, principal: AdminKey
) -> dict[str, Any]:
    if not await _services(request).tokens.delete_operation_cost(operation):
        raise ApiError(404, f"No cost is set for {operation!r}", code="cost_not_found")
    return {"data": {"operation": operation, "deleted": True}}


# --- model prices and settings -----------------------------------------------------------


@router.get("/models", summary="Model rates: the shipped table with the overrides")
async def list_models(request: Request, principal: AdminKey) -> dict[str, Any]:
    rates = await _services(request).pricing.list_model_rates()
    return {"data": [rate_json(rate) for rate in rates]}


@router.put(
    "/models/{model:path}",
    summary="Set one model's rates (an override)",
    responses=errors(WITH_BODY),
)
async def set_model(
    request: Request, model: ModelPath, body: ModelRateUpdate, principal: AdminKey
) -> dict[str, Any]:
    rate = await _services(request).pricing.set_model_rate(
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
    if not await _services(request).pricing.delete_model_rate(model):
        raise ApiError(404, f"No override is set for model {model!r}", code="model_not_found")
    return {"data": {"model": model, "deleted": True}}


@router.get("/settings", summary="Global pricing settings")
async def get_settings(request: Request, principal: AdminKey) -> dict[str, Any]:
    return {"data": settings_json(await _services(request).pricing.settings())}


@router.patch("/settings", summary="Change global pricing settings", responses=errors(WITH_BODY))
async def update_settings(
    request: Request, body: SettingsUpdate, principal: AdminKey
) -> dict[str, Any]:
    settings = await _services(request).pricing.update_settings(
        token_multiplier=body.token_multiplier, tokens_per_usd=body.tokens_per_usd
    )
    return {"data": settings_json(settings)}


# --- grants ------------------------------------------------------------------------------


@router.post(
    "/grants",
    summary="Grant tokens to a user (an admin_grant on the ledger)",
    responses=errors(WITH_BODY, 404, 409),
)
async def grant(request: Request, body: GrantRequest, principal: AdminKey) -> dict[str, Any]:
    result = await _services(request).tokens.credit(
        body.user_id,
        amount=body.amount,
        operation_type="admin_grant",
        description=body.reason,
        metadata={"granted_by": principal.app_slug},
        idempotency_key=idempotency_key(request, body.reference_id),
        idempotency_scope=principal.app_slug,
    )
    return {"data": operation_data(settled(request, result))}
