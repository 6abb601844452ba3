"""Routes: users (Token Service dialect): open a wallet, read one.

Opening a wallet grants the welcome bonus, so it needs the ``credit`` scope. It is
idempotent by ``userId`` itself: opening an open wallet answers 200 with
``created: false`` and grants nothing (an ``Idempotency-Key`` header is accepted and
adds nothing).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from tokenbank.api.auth import CreditKey, ReadKey
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import ApiModel, UserId, UserIdPath
from tokenbank.api.state import get_services
from tokenbank.api.views import balance_json, iso_utc, iso_utc_or_none, wallet_not_found

router = APIRouter(
    prefix="/api/users", tags=["users (Token Service dialect)"], responses=errors(AUTHENTICATED)
)


class OpenWalletRequest(ApiModel):
    userId: UserId  # noqa: N815 - the wire contract's name


@router.post(
    "",
    status_code=201,
    summary="Open a user's wallet (201 created, with the welcome bonus; 200 if it existed)",
    responses={
        200: {"description": "The wallet already existed; nothing changed"},
        **errors(WITH_BODY),
    },
)
async def open_wallet(
    request: Request, response: Response, body: OpenWalletRequest, principal: CreditKey
) -> dict[str, Any]:
    """``{"data": {userId, balance, created, welcomeBonus}}``: ``welcomeBonus`` is the
    tokens granted by this call (0 when the wallet already existed).
    """
    result = await get_services(request).tokens.open_wallet(body.userId)
    if not result.created:
        response.status_code = 200
    return {
        "data": {
            "userId": result.user_id,
            "balance": result.new_balance,
            "created": result.created,
            "welcomeBonus": result.welcome_bonus_tokens,
        }
    }


@router.get("/{userId}", summary="A user's wallet", responses=errors(WITH_INPUT, 404))
async def get_user(request: Request, user_id: UserIdPath, principal: ReadKey) -> dict[str, Any]:
    """``{"data": {userId, balance, available, held, spent, status, plan,
    lastRenewalAt, createdAt}}``; 404 "User wallet not found".
    """
    info = await get_services(request).tokens.get_balance(user_id)
    if info is None:
        raise wallet_not_found()
    return {
        "data": {
            **balance_json(info),
            "lastRenewalAt": iso_utc_or_none(info.last_renewal_at),
            "createdAt": iso_utc(info.created_at),
        }
    }
