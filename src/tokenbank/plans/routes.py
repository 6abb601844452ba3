"""The plans' admin routes: plans, features, and which plan a user is on."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request

from tokenbank.api.admin import admin_router, given
from tokenbank.api.auth import AdminKey
from tokenbank.api.responses import WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import UserIdPath
from tokenbank.api.state import get_services
from tokenbank.plans.schemas import (
    FeatureCreate,
    FeatureUpdate,
    PlanCreate,
    PlanUpdate,
    UserPlanUpdate,
    feature_json,
    plan_json,
)

router = admin_router()

FeatureIdPath = Annotated[str, Path(alias="featureId", min_length=1, max_length=128)]
PlanPath = Annotated[str, Path(min_length=1, max_length=64)]


# --- plans -------------------------------------------------------------------------------


@router.get("/plans", summary="List plans with their features")
async def list_plans(request: Request, principal: AdminKey) -> dict[str, Any]:
    return {"data": [plan_json(plan) for plan in await get_services(request).plans.list_plans()]}


@router.post(
    "/plans", status_code=201, summary="Create a plan", responses=errors(WITH_BODY, 404, 409)
)
async def create_plan(request: Request, body: PlanCreate, principal: AdminKey) -> dict[str, Any]:
    plan = await get_services(request).plans.create_plan(
        body.name,
        description=body.description,
        monthly_allocation_tokens=body.monthly_allocation_tokens,
        profit_percent=body.profit_percent,
        features=body.features,
        allocation_policy=body.allocation_policy,
        rollover_cap_tokens=body.rollover_cap_tokens,
    )
    return {"data": plan_json(plan)}


@router.get("/plans/{name}", summary="One plan", responses=errors(WITH_INPUT, 404))
async def get_plan(request: Request, name: PlanPath, principal: AdminKey) -> dict[str, Any]:
    return {"data": plan_json(await get_services(request).plans.get_plan(name))}


@router.patch(
    "/plans/{name}",
    summary="Change a plan (features replaces the whole set)",
    responses=errors(WITH_BODY, 404),
)
async def update_plan(
    request: Request, name: PlanPath, body: PlanUpdate, principal: AdminKey
) -> dict[str, Any]:
    plan = await get_services(request).plans.update_plan(name, **given(body))
    return {"data": plan_json(plan)}


@router.delete(
    "/plans/{name}", summary="Delete a plan no wallet is on", responses=errors(WITH_INPUT, 404, 409)
)
async def delete_plan(request: Request, name: PlanPath, principal: AdminKey) -> dict[str, Any]:
    await get_services(request).plans.delete_plan(name)
    return {"data": {"name": name, "deleted": True}}


@router.put(
    "/plans/{name}/features/{featureId}",
    summary="Add a feature to a plan",
    responses=errors(WITH_BODY, 404),
)
async def add_plan_feature(
    request: Request, name: PlanPath, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    plan = await get_services(request).plans.add_feature_to_plan(name, feature_id)
    return {"data": plan_json(plan)}


@router.delete(
    "/plans/{name}/features/{featureId}",
    summary="Remove a feature from a plan",
    responses=errors(WITH_INPUT, 404),
)
async def remove_plan_feature(
    request: Request, name: PlanPath, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    plan = await get_services(request).plans.remove_feature_from_plan(name, feature_id)
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
    features = await get_services(request).plans.list_features(app=app)
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
    feature = await get_services(request).plans.create_feature(
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
    return {"data": feature_json(await get_services(request).plans.get_feature(feature_id))}


@router.patch(
    "/features/{featureId}",
    summary="Change a feature (a new rule bumps its version)",
    responses=errors(WITH_BODY, 404),
)
async def update_feature(
    request: Request, feature_id: FeatureIdPath, body: FeatureUpdate, principal: AdminKey
) -> dict[str, Any]:
    feature = await get_services(request).plans.update_feature(feature_id, **given(body))
    return {"data": feature_json(feature)}


@router.delete(
    "/features/{featureId}",
    summary="Delete a feature (it leaves every plan)",
    responses=errors(WITH_INPUT, 404),
)
async def delete_feature(
    request: Request, feature_id: FeatureIdPath, principal: AdminKey
) -> dict[str, Any]:
    await get_services(request).plans.delete_feature(feature_id)
    return {"data": {"id": feature_id, "deleted": True}}


# --- users ---------------------------------------------------------------------------------


@router.put(
    "/users/{userId}/plan",
    summary="Put a user on a plan (null: on none)",
    responses=errors(WITH_BODY, 404),
)
async def set_user_plan(
    request: Request, user_id: UserIdPath, body: UserPlanUpdate, principal: AdminKey
) -> dict[str, Any]:
    plan = await get_services(request).plans.set_user_plan(user_id, body.plan)
    return {"data": {"userId": user_id, "plan": plan}}
