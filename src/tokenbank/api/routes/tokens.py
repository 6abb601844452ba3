"""Token Service dialect: balance, deduct, refund, credit, holds, ledger and statistics.

Success bodies are ``{"data": {...}}``; errors ``{"error": ..., "code": ..., ...}``.
Each app's idempotency keys live in their own scope, so two apps never collide.

Conventions of every route here:

- Timestamps in answers are ISO 8601 in UTC with a ``Z`` suffix
  (``2026-01-01T00:15:00Z``; fractional seconds only when non-zero).
- ``startDate`` / ``endDate`` query parameters are ISO 8601 date-times *with* a
  timezone (``Z`` or an offset; encode ``+`` as ``%2B`` in a URL). A missing
  timezone, an unparsable value, or ``startDate`` after ``endDate`` is a 422
  ``invalid_request`` naming the parameter, as is any other bad query parameter.
- A hold id that is not of the form ``hold_`` + 32 hex digits names no hold: 404
  ``hold_not_found``, the same answer as a well-formed id that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BeforeValidator, Field, StrictInt

from tokenbank.api.auth import CreditKey, ReadKey, RefundKey, SpendKey, spend_cap_of
from tokenbank.api.direct import Direct
from tokenbank.api.errors import ApiError
from tokenbank.api.idempotency import idempotency_key
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import (
    DATE_EXAMPLE,
    USER_ID_PATH_RULES,
    ApiModel,
    Description,
    EffectiveAt,
    ExpiresAt,
    GrantCategory,
    GrantPriority,
    Metadata,
    OperationType,
    ReferenceId,
    Tokens,
    TokensOrZero,
    UserId,
    UserIdPath,
    aware_datetime,
)
from tokenbank.api.state import get_services
from tokenbank.api.views import (
    balance_json,
    iso_utc,
    iso_utc_or_none,
    operation_data,
    settled,
    wallet_not_found,
)
from tokenbank.config import (
    DEFAULT_PAGE_SIZE,
    MAX_HOLD_TTL_SECONDS,
    MAX_OPERATION_TYPE_LENGTH,
    MAX_PAGE_SIZE,
)
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.grants import DEFAULT_GRANT_PRIORITY
from tokenbank.ledger.operations import HOLD_ID_PATTERN
from tokenbank.ledger.results import (
    GrantView,
    HoldResult,
    HoldView,
    LedgerEntryView,
    ScheduledCreditView,
)
from tokenbank.ledger.service import TokenService

router = APIRouter(
    prefix="/api/tokens", tags=["tokens (Token Service dialect)"], responses=errors(AUTHENTICATED)
)

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


CreditOperationType = Literal["purchase", "bonus", "admin_grant", "renewal", "auto_recharge"]
HoldTtl = Annotated[StrictInt, Field(ge=1, le=MAX_HOLD_TTL_SECONDS)]


class CreditRequest(Model):
    """A credit makes one grant: ``category`` defaults by ``operationType`` (purchases
    and recharges are paid, the rest promotional), ``priority`` to 50 (lower is spent
    first), ``expiresAt`` to never. With ``effectiveAt`` in the future it is
    scheduled: nothing changes until then."""

    userId: UserId  # noqa: N815
    amount: Tokens
    operationType: CreditOperationType = "admin_grant"  # noqa: N815
    description: Description = None
    referenceId: ReferenceId = None  # noqa: N815
    metadata: Metadata = None
    category: GrantCategory | None = None
    priority: GrantPriority = DEFAULT_GRANT_PRIORITY
    expiresAt: ExpiresAt = None  # noqa: N815
    effectiveAt: EffectiveAt = None  # noqa: N815


class HoldRequest(Model):
    userId: UserId  # noqa: N815
    amount: Tokens
    ttlSeconds: HoldTtl | None = None  # noqa: N815 - default: TOKENBANK_HOLD_DEFAULT_TTL_SECONDS
    operationType: OperationType = "usage"  # noqa: N815
    description: Description = None
    referenceId: ReferenceId = None  # noqa: N815
    metadata: Metadata = None


class CaptureRequest(Model):
    amount: TokensOrZero
    referenceId: ReferenceId = None  # noqa: N815
    description: Description = None
    metadata: Metadata = None


class VoidRequest(Model):
    """Void takes no fields: an empty body, or ``{}``."""


@router.get("/balance/{userId}", summary="A user's balance", responses=errors(WITH_INPUT, 404))
async def balance(request: Request, user_id: UserIdPath, principal: ReadKey) -> dict[str, Any]:
    info = await get_services(request).tokens.get_balance(user_id)
    if info is None:
        raise wallet_not_found()
    return {"data": balance_json(info)}


@router.post(
    "/deduct",
    summary="Deduct tokens (402 when too few)",
    responses=errors(WITH_BODY, 402, 404, 409),
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
        spend_cap=spend_cap_of(principal),
    )
    return {"data": operation_data(settled(request, result))}


@router.post(
    "/refund",
    summary="Refund tokens (bounded by the named deduct, or by spent)",
    responses=errors(WITH_BODY, 404, 409),
)
async def refund(request: Request, body: RefundRequest, principal: RefundKey) -> dict[str, Any]:
    tokens = get_services(request).tokens
    refund_of = body.refundOf
    if body.ledgerEntryId is not None and body.refundOf is not None:
        raise ApiError(400, "Send ledgerEntryId or refundOf, not both", code="invalid_input")
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


@router.post(
    "/credit",
    summary="Credit tokens (a grant, bonus, purchase, renewal or recharge)",
    responses=errors(WITH_BODY, 404, 409),
)
async def credit(request: Request, body: CreditRequest, principal: CreditKey) -> dict[str, Any]:
    """Add tokens to a wallet; ``operationType`` defaults to ``admin_grant``.

    Answers ``{"data": {balance, ledgerEntryId, transactionId, replayed}}``; 404 for
    an unknown user, 403 for a closed wallet. A scheduled credit (``effectiveAt``
    later than now) answers the balance as it is, null ids, and ``scheduled:
    {scheduledCreditId, effectiveAt}``.
    """
    tokens = get_services(request).tokens
    result = await tokens.credit(
        body.userId,
        amount=body.amount,
        operation_type=body.operationType,
        description=body.description,
        metadata=body.metadata,
        idempotency_key=idempotency_key(request, body.referenceId),
        idempotency_scope=principal.app_slug,
        category=body.category,
        priority=body.priority,
        expires_at=body.expiresAt,
        effective_at=body.effectiveAt,
    )
    data = operation_data(settled(request, result))
    if result.scheduled_credit_id is not None:
        data["scheduled"] = {
            "scheduledCreditId": result.scheduled_credit_id,
            "effectiveAt": iso_utc_or_none(result.effective_at),
        }
    return {"data": data}


# --- holds (two-phase spending) ----------------------------------------------------------

HoldIdPath = Annotated[str, Path(alias="holdId")]


def checked_hold_id(hold_id: str) -> str:
    """A malformed hold id names no hold: the same 404 as an unknown one."""
    if not HOLD_ID_PATTERN.fullmatch(hold_id):
        raise ApiError(404, "Hold not found", code=ErrorCode.HOLD_NOT_FOUND.value)
    return hold_id


async def hold_data(tokens: TokenService, result: HoldResult) -> dict[str, Any]:
    """The hold after a place, capture or void.

    A replay keeps what the first answer kept; the wallet figures it did not keep
    (``available``, and ``balance`` for a hold or a void) are the wallet's current ones.
    """
    balance, available = result.new_balance, result.available_tokens
    if (balance is None or available is None) and result.user_id is not None:
        info = await tokens.get_balance(result.user_id)
        if info is not None:
            balance = info.tokens_balance if balance is None else balance
            available = info.available if available is None else available
    return {
        "holdId": result.hold_id,
        "userId": result.user_id,
        "status": result.status,
        "amount": result.amount_tokens,
        "capturedAmount": result.captured_tokens,
        "expiresAt": iso_utc_or_none(result.expires_at),
        "balance": balance,
        "available": available,
        "ledgerEntryId": result.ledger_entry_id,
        "transactionId": result.transaction_id,
        "replayed": result.replayed,
    }


def hold_view_data(view: HoldView, now: datetime) -> dict[str, Any]:
    # A pending hold past its expiry can no longer be captured: say so, even before
    # the sweeper has released it.
    expired = view.status == "pending" and view.expires_at <= now
    return {
        "holdId": view.hold_id,
        "userId": view.user_id,
        "status": "expired" if expired else view.status,
        "amount": view.amount_tokens,
        "capturedAmount": view.captured_tokens,
        "operationType": view.operation_type,
        "expiresAt": iso_utc(view.expires_at),
        "createdAt": iso_utc(view.created_at),
        "resolvedAt": iso_utc_or_none(view.resolved_at),
    }


HOLD_NOTES = {
    404: "Hold not found (also for a malformed hold id)",
    409: "Hold is no longer pending, or has expired",
}
HOLD_RESPONSES = errors(WITH_BODY, 404, 409, notes=HOLD_NOTES)


@router.post(
    "/holds",
    summary="Reserve tokens until captured, voided or expired (200, like deduct)",
    responses=errors(WITH_BODY, 402, 404, 409),
)
async def place_hold(request: Request, body: HoldRequest, principal: SpendKey) -> dict[str, Any]:
    """Reserve ``amount`` tokens for ``ttlSeconds`` (default from settings, at most 7 days).

    Answers 200 (not 201, for symmetry with deduct) with ``{"data": {holdId, userId,
    status: "pending", amount, capturedAmount: null, expiresAt, balance, available,
    ledgerEntryId: null, transactionId: null, replayed}}``; 402 like deduct.
    """
    tokens = get_services(request).tokens
    result = await tokens.hold(
        body.userId,
        body.amount,
        ttl_seconds=body.ttlSeconds,
        operation_type=body.operationType,
        description=body.description,
        metadata=body.metadata,
        idempotency_key=idempotency_key(request, body.referenceId),
        idempotency_scope=principal.app_slug,
        spend_cap=spend_cap_of(principal),
    )
    return {"data": await hold_data(tokens, settled(request, result))}


@router.post(
    "/holds/{holdId}/capture",
    summary="Settle a hold for the actual amount (0 allowed); the rest is released",
    responses=HOLD_RESPONSES,
)
async def capture_hold(
    request: Request, hold_id: HoldIdPath, body: CaptureRequest, principal: SpendKey
) -> dict[str, Any]:
    """Capture ``amount`` of a pending hold: less than held releases the rest; more is
    recorded in full (usage that happened) and may overdraw the wallet.

    The same capture again answers the first result with ``replayed: true``; 409 when
    the hold was voided, expired, or captured for a different amount.
    """
    tokens = get_services(request).tokens
    result = await tokens.capture(
        checked_hold_id(hold_id),
        body.amount,
        description=body.description,
        metadata=body.metadata,
        idempotency_key=idempotency_key(request, body.referenceId),
        idempotency_scope=principal.app_slug,
        spend_cap=spend_cap_of(principal),
    )
    return {"data": await hold_data(tokens, settled(request, result))}


@router.post(
    "/holds/{holdId}/void",
    summary="Release a hold without spending (repeatable)",
    responses=HOLD_RESPONSES,
)
async def void_hold(
    request: Request,
    hold_id: HoldIdPath,
    principal: SpendKey,
    body: VoidRequest | None = None,
) -> dict[str, Any]:
    """Void a pending hold. Voiding a voided or expired hold again succeeds with
    ``replayed: true`` (the tokens are released either way); a captured hold is a 409.
    """
    tokens = get_services(request).tokens
    idempotency_key(request, None)  # checked for shape; a void is idempotent by hold id
    result = await tokens.void(checked_hold_id(hold_id))
    return {"data": await hold_data(tokens, settled(request, result))}


@router.get(
    "/holds/{holdId}", summary="A hold's state", responses=errors(WITH_INPUT, 404, notes=HOLD_NOTES)
)
async def get_hold(request: Request, hold_id: HoldIdPath, principal: ReadKey) -> dict[str, Any]:
    """``{"data": {holdId, userId, status, amount, capturedAmount, operationType,
    expiresAt, createdAt, resolvedAt}}``; a pending hold past its expiry reads
    ``"expired"``.
    """
    tokens = get_services(request).tokens
    view = await tokens.get_hold(checked_hold_id(hold_id))
    if view is None:
        raise ApiError(404, "Hold not found", code=ErrorCode.HOLD_NOT_FOUND.value)
    return {"data": hold_view_data(view, tokens.clock())}


# --- history and statistics ---------------------------------------------------------------

MAX_LEDGER_OFFSET = 1_000_000_000


StartDate = Annotated[
    datetime | None,
    BeforeValidator(aware_datetime),
    Query(alias="startDate", description=f"ISO 8601 with a timezone, e.g. {DATE_EXAMPLE}"),
]
EndDate = Annotated[
    datetime | None,
    BeforeValidator(aware_datetime),
    Query(alias="endDate", description=f"ISO 8601 with a timezone, e.g. {DATE_EXAMPLE}"),
]


def check_period(start_date: datetime | None, end_date: datetime | None) -> None:
    if start_date is not None and end_date is not None and start_date > end_date:
        message = "must not be after endDate"
        raise ApiError(
            422,
            f"Invalid request: query.startDate: {message}",
            code="invalid_request",
            details=[{"field": "query.startDate", "message": message}],
        )


def entry_data(entry: LedgerEntryView) -> dict[str, Any]:
    return {
        "id": entry.id,
        "transactionId": entry.transaction_id,
        "type": entry.operation_type,
        "amount": entry.tokens_amount,
        "balanceBefore": entry.balance_before,
        "balanceAfter": entry.balance_after,
        "description": entry.description,
        "metadata": entry.metadata,
        "createdAt": iso_utc(entry.created_at),
        "refundOf": entry.refund_of,
        "holdId": entry.hold_id,
    }


@router.get(
    "/ledger/{userId}",
    summary="A user's ledger entries, newest first",
    responses=errors(WITH_INPUT, 404),
)
async def ledger(
    request: Request,
    user_id: UserIdPath,
    principal: ReadKey,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=MAX_LEDGER_OFFSET)] = 0,
    operation_type: Annotated[
        str | None,
        Query(
            alias="type",
            min_length=1,
            max_length=MAX_OPERATION_TYPE_LENGTH,
            pattern=r"^[a-z][a-z0-9_.:-]*$",
            description="only entries of this operation type (usage, purchase, refund, ...)",
        ),
    ] = None,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> dict[str, Any]:
    """``{"data": {"entries": [{id, transactionId, type, amount, balanceBefore,
    balanceAfter, description, metadata, createdAt, refundOf, holdId}], "limit",
    "offset", "userId"}}``. ``amount`` is signed: negative for a debit or capture.
    ``startDate`` and ``endDate`` are inclusive.
    """
    check_period(start_date, end_date)
    tokens = get_services(request).tokens
    if await tokens.get_balance(user_id) is None:
        raise wallet_not_found()
    entries = await tokens.get_ledger().get_user_entries(
        user_id,
        limit=limit,
        offset=offset,
        operation_type=operation_type,
        start_date=start_date,
        end_date=end_date,
    )
    return {
        "data": {
            "entries": [entry_data(entry) for entry in entries],
            "limit": limit,
            "offset": offset,
            "userId": user_id,
        }
    }


@router.get(
    "/stats/{userId}", summary="A user's totals over a period", responses=errors(WITH_INPUT, 404)
)
async def stats(
    request: Request,
    user_id: UserIdPath,
    principal: ReadKey,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> dict[str, Any]:
    """``{"data": {totalSpent, totalEarned, netChange, operationCount}}`` over the
    wallet's entries (``startDate`` and ``endDate`` inclusive, both optional).
    """
    check_period(start_date, end_date)
    tokens = get_services(request).tokens
    if await tokens.get_balance(user_id) is None:
        raise wallet_not_found()
    statistics = await tokens.get_ledger().get_user_statistics(user_id, start_date, end_date)
    return {
        "data": {
            "totalSpent": statistics.total_spent,
            "totalEarned": statistics.total_earned,
            "netChange": statistics.net_change,
            "operationCount": statistics.operation_count,
        }
    }


# --- grants ----------------------------------------------------------------------------------


def grant_data(grant: GrantView) -> dict[str, Any]:
    return {
        "grantId": grant.grant_id,
        "source": grant.source,
        "category": grant.category,
        "priority": grant.priority,
        "amount": grant.amount_tokens,
        "remaining": grant.remaining_tokens,
        "expiresAt": iso_utc_or_none(grant.expires_at),
        "createdAt": iso_utc(grant.created_at),
        "status": grant.status,
    }


@router.get(
    "/grants/{userId}",
    summary="A user's grants (paid or promotional tokens, what remains, when they expire)",
    responses=errors(WITH_INPUT, 404),
)
async def grants(
    request: Request,
    user_id: UserIdPath,
    principal: ReadKey,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=MAX_LEDGER_OFFSET)] = 0,
) -> dict[str, Any]:
    """``{"data": [{grantId, source, category, priority, amount, remaining, expiresAt,
    createdAt, status}]}``, newest first; ``status`` is ``active``, ``spent`` or
    ``expired``. Credits scheduled for later come first (on the first page), with
    ``status`` ``scheduled``, ``grantId`` null, ``scheduledCreditId`` and
    ``effectiveAt``. Debits consume grants by priority, then earliest expiry, then
    promotional before paid, then oldest."""
    tokens = get_services(request).tokens
    found = await tokens.get_grants(user_id, limit=limit, offset=offset)
    waiting = await tokens.get_scheduled_credits(user_id, limit=limit) if offset == 0 else []
    if found is None or waiting is None:
        raise wallet_not_found()
    return {
        "data": [scheduled_data(credit) for credit in waiting]
        + [grant_data(grant) for grant in found]
    }


def scheduled_data(credit: ScheduledCreditView) -> dict[str, Any]:
    return {
        "grantId": None,
        "scheduledCreditId": credit.scheduled_credit_id,
        "source": credit.source,
        "category": credit.category,
        "priority": credit.priority,
        "amount": credit.amount_tokens,
        "remaining": 0,
        "effectiveAt": iso_utc(credit.effective_at),
        "expiresAt": iso_utc_or_none(credit.expires_at),
        "createdAt": iso_utc(credit.created_at),
        "status": "scheduled",
    }


# The hottest routes of this module, served first by tokenbank.api.direct (issue 15).
DIRECT = (
    Direct(
        "GET",
        "/api/tokens/balance/{userId}",
        balance,
        scope="read",
        path_params={"userId": USER_ID_PATH_RULES},
    ),
    Direct("POST", "/api/tokens/deduct", deduct, scope="spend", body_model=DeductRequest),
    Direct("POST", "/api/tokens/holds", place_hold, scope="spend", body_model=HoldRequest),
    Direct(
        "POST",
        "/api/tokens/holds/{holdId}/capture",
        capture_hold,
        scope="spend",
        body_model=CaptureRequest,
    ),
)
