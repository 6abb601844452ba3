"""Request bodies of the plans' admin routes, and the JSON views they answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt
from pydantic.json_schema import SkipJsonSchema

from tokenbank.api.admin import AdminModel, Decimalish, PatchModel
from tokenbank.api.schemas import Description, Tokens
from tokenbank.apps.service import SLUG_PATTERN
from tokenbank.plans.service import FeatureView, PlanView
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.rules import rule_json

# Documented (the service checks it and answers 400): what an app slug may be.
SLUG_SCHEMA = {"pattern": SLUG_PATTERN.pattern}
AllocationPolicy = Literal["expire", "rollover", "keep"]
RolloverCap = Annotated[StrictInt, Field(ge=0, le=1_000_000_000_000)]
FeatureIds = Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=1_000)]


class PlanCreate(AdminModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: Description = None
    monthly_allocation_tokens: Annotated[StrictInt, Field(ge=0)] = 0
    profit_percent: Decimalish = 0
    features: FeatureIds = Field(default_factory=list)
    # What a renewal does with what is left of the previous allocation.
    allocation_policy: AllocationPolicy = "expire"
    # Under rollover, the most that carries over (null: one allocation).
    rollover_cap_tokens: RolloverCap | None = None


class PlanUpdate(PatchModel):
    """Only the fields sent change; null clears the description or the rollover cap."""

    not_null = ("monthly_allocation_tokens", "profit_percent", "features", "allocation_policy")

    description: Description = None
    monthly_allocation_tokens: Annotated[StrictInt, Field(ge=0)] | SkipJsonSchema[None] = None
    profit_percent: Decimalish | SkipJsonSchema[None] = None
    features: FeatureIds | SkipJsonSchema[None] = None
    allocation_policy: AllocationPolicy | SkipJsonSchema[None] = None
    rollover_cap_tokens: RolloverCap | None = None


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


def plan_json(plan: PlanView) -> dict[str, Any]:
    return {
        "name": plan.name,
        "description": plan.description,
        "monthlyAllocationTokens": plan.monthly_allocation_tokens,
        "profitPercent": decimal_text(plan.profit_percent),
        "features": list(plan.features),
        "allocationPolicy": plan.allocation_policy,
        "rolloverCapTokens": plan.rollover_cap_tokens,
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
