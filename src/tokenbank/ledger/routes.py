"""The ledger's admin routes: wallet status, the operation cost table, grants."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request

from tokenbank.api.admin import admin_router
from tokenbank.api.auth import AdminKey
from tokenbank.api.errors import ApiError
from tokenbank.api.idempotency import idempotency_key
from tokenbank.api.responses import WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import UserIdPath
from tokenbank.api.state import get_services
from tokenbank.api.views import balance_json, operation_data, settled, wallet_not_found
from tokenbank.ledger.operations import OPERATION_TYPE_PATTERN
from tokenbank.ledger.schemas import CostUpdate, GrantRequest, UserStatusUpdate

router = admin_router()

# Documented (the service checks it and answers 400): what an operation type may be.
OPERATION_SCHEMA = {"pattern": OPERATION_TYPE_PATTERN.pattern}
OperationPath = Annotated[
    str, Path(min_length=1, max_length=64, json_schema_extra=OPERATION_SCHEMA)
]


# --- wallets -----------------------------------------------------------------------------


@router.put(
    "/users/{userId}/status",
    summary="Suspend, close or reactivate a wallet",
    responses=errors(WITH_BODY, 404),
)
async def set_user_status(
    request: Request, user_id: UserIdPath, body: UserStatusUpdate, principal: AdminKey
) -> dict[str, Any]:
    info = await get_services(request).tokens.set_wallet_status(user_id, body.status)
    if info is None:
        raise wallet_not_found()
    return {"data": balance_json(info)}


# --- the cost table ----------------------------------------------------------------------


@router.get("/costs", summary="The operation cost table")
async def list_costs(request: Request, principal: AdminKey) -> dict[str, Any]:
    costs = await get_services(request).tokens.get_operation_costs()
    return {"data": [{"operation": op, "tokens": costs[op]} for op in sorted(costs)]}


@router.get(
    "/costs/{operation}", summary="What one operation costs", responses=errors(WITH_INPUT, 404)
)
async def get_cost(
    request: Request, operation: OperationPath, principal: AdminKey
) -> dict[str, Any]:
    costs = await get_services(request).tokens.get_operation_costs()
    if operation not in costs:
        raise ApiError(404, f"No cost is set for {operation!r}", code="cost_not_found")
    return {"data": {"operation": operation, "tokens": costs[operation]}}


@router.put(
    "/costs/{operation}", summary="Set what one operation costs", responses=errors(WITH_BODY)
)
async def set_cost(
    request: Request, operation: OperationPath, body: CostUpdate, principal: AdminKey
) -> dict[str, Any]:
    await get_services(request).tokens.set_operation_cost(
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
    if not await get_services(request).tokens.delete_operation_cost(operation):
        raise ApiError(404, f"No cost is set for {operation!r}", code="cost_not_found")
    return {"data": {"operation": operation, "deleted": True}}


# --- grants ------------------------------------------------------------------------------


@router.post(
    "/grants",
    summary="Grant tokens to a user (an admin_grant on the ledger)",
    responses=errors(WITH_BODY, 404, 409),
)
async def grant(request: Request, body: GrantRequest, principal: AdminKey) -> dict[str, Any]:
    result = await get_services(request).tokens.credit(
        body.user_id,
        amount=body.amount,
        operation_type="admin_grant",
        description=body.reason,
        metadata={"granted_by": principal.app_slug},
        idempotency_key=idempotency_key(request, body.reference_id),
        idempotency_scope=principal.app_slug,
    )
    return {"data": operation_data(settled(request, result))}
