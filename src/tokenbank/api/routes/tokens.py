"""Dialect A (seed 000): balance, deduct and refund, exactly as contracted.

Success bodies are ``{"data": {...}}``; errors ``{"error": ..., ...}``. Each app's
idempotency keys live in their own scope, so two apps never collide.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from tokenbank.api.auth import ReadKey, RefundKey, SpendKey
from tokenbank.api.errors import ApiError
from tokenbank.api.idempotency import idempotency_key
from tokenbank.api.refusals import refusal
from tokenbank.api.schemas import (
    ApiModel,
    Description,
    Metadata,
    OperationType,
    ReferenceId,
    Tokens,
    UserId,
)
from tokenbank.api.state import get_services
from tokenbank.config import MAX_USER_ID_LENGTH
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.results import OperationResult

router = APIRouter(prefix="/api/tokens", tags=["tokens (seed 000)"])

UserIdPath = Annotated[str, Path(alias="userId", min_length=1, max_length=MAX_USER_ID_LENGTH)]
Model = ApiModel


class DeductRequest(Model):
    userId: UserId  # noqa: N815 - the wire contract's name
    amount: Tokens
    description: Description = None
    referenceId: ReferenceId = None  # noqa: N815
    operationType: OperationType = "usage"  # noqa: N815
    metadata: Metadata = None


class RefundRequest(Model):
    userId: UserId  # noqa: N815
    amount: Tokens
    description: Description = None
    referenceId: ReferenceId = None  # noqa: N815
    ledgerEntryId: int | None = None  # noqa: N815 - the deduct's entry, to bound the refund
    refundOf: str | None = None  # noqa: N815 - or the deduct's transaction id
    metadata: Metadata = None


def operation_data(result: OperationResult) -> dict[str, Any]:
    return {
        "balance": result.new_balance,
        "ledgerEntryId": result.ledger_entry_id,
        "transactionId": result.transaction_id,
        "replayed": result.replayed,
    }


def settled(request: Request, result: OperationResult) -> OperationResult:
    if not result.success:
        raise refusal(result, public_url=get_services(request).settings.public_url)
    return result


@router.get("/balance/{userId}", summary="A user's balance")
async def balance(request: Request, user_id: UserIdPath, principal: ReadKey) -> dict[str, Any]:
    info = await get_services(request).tokens.get_balance(user_id)
    if info is None:
        raise ApiError(404, "User wallet not found", code=ErrorCode.WALLET_NOT_FOUND.value)
    return {
        "data": {
            "userId": info.user_id,
            "balance": info.tokens_balance,
            "available": info.available,
            "held": info.held,
            "spent": info.tokens_spent,
            "status": info.status,
            "plan": info.tier,
        }
    }


@router.post(
    "/deduct",
    summary="Deduct tokens (402 when too few)",
    responses={402: {"description": "Insufficient tokens"}},
)
async def deduct(request: Request, body: DeductRequest, principal: SpendKey) -> dict[str, Any]:
    tokens = get_services(request).tokens
    result = await tokens.debit(
        body.userId,
        amount=body.amount,
        operation_type=body.operationType,
        description=body.description,
        metadata=body.metadata,
        idempotency_key=idempotency_key(request, body.referenceId),
        idempotency_scope=principal.app_slug,
    )
    return {"data": operation_data(settled(request, result))}


@router.post("/refund", summary="Refund tokens (bounded by the named deduct, or by spent)")
async def refund(request: Request, body: RefundRequest, principal: RefundKey) -> dict[str, Any]:
    tokens = get_services(request).tokens
    refund_of = body.refundOf
    if body.ledgerEntryId is not None:
        refund_of = await tokens.transaction_of_entry(body.ledgerEntryId)
        if refund_of is None:
            raise ApiError(404, "No ledger entry with that id", code="debit_not_found")
    result = await tokens.refund(
        body.userId,
        body.amount,
        body.metadata,
        refund_of=refund_of,
        description=body.description,
        idempotency_key=idempotency_key(request, body.referenceId),
        idempotency_scope=principal.app_slug,
    )
    return {"data": operation_data(settled(request, result))}
