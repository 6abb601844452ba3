"""Token Process dialect: start and end, exactly as contracted.

Authenticate with ``x-server-api-key: <key>`` (or ``Authorization: Bearer <key>``);
the key needs the ``spend`` scope. Bodies are ``{"success": true, "message": ...,
"data": {...}}``; errors are ``{"success": false, "status": code, "message": ...}``:

- 401 ``Invalid server API key`` (``Missing server API key`` without one)
- 404 ``User wallet not found``: no wallet, or (at start) a wallet that is not active
- 404 ``Feature endpoint not found``
- 403 ``Feature endpoint is not available in your package`` (start only; a user on
  no plan has no features)
- 400/422 for a malformed body, 409 for a request id reused with a different request.

Two modes (see :mod:`tokenbank.process.service` for the whole story):

**Plain**, the seed's: ``start`` reads the wallet and answers ``access-able`` when
the available balance is at least the feature's ``min_balance_tokens``; nothing is
reserved. ``end`` charges the priced cost in full.

**Hold**: when the feature has ``hold_tokens``, or the start sends ``hold: true`` or
``hold_tokens``, ``start`` reserves that amount and answers its ``hold_id``, so that
concurrent starts can't all pass on the same last tokens (a hold that can't be
placed answers ``not-access-able``). ``end`` with that ``hold_id`` (or the start's
``request_id``) captures the actual cost and releases the rest.

Send a ``request_id`` (or an ``Idempotency-Key`` header) with ``end`` so that a
retry never charges twice.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool

from tokenbank.api.auth import SpendKey, spend_cap_of
from tokenbank.api.direct import Direct
from tokenbank.api.idempotency import idempotency_key
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, errors
from tokenbank.api.schemas import ApiModel, ReferenceId, Tokens, TokensOrZero, UserId
from tokenbank.api.state import get_services
from tokenbank.pricing.calculator import Usage
from tokenbank.pricing.rates import MAX_MODEL_NAME_LENGTH
from tokenbank.process.service import EndOutcome, StartOutcome

PREFIX = "/api/token-process"
router = APIRouter(
    prefix=PREFIX,
    tags=["token process (Token Process dialect)"],
    responses=errors(AUTHENTICATED, dialect="B"),
)

FeatureEndpointId = Annotated[str, Field(min_length=1, max_length=128)]
ModelName = Annotated[str | None, Field(min_length=1, max_length=MAX_MODEL_NAME_LENGTH)]
HoldId = Annotated[str | None, Field(min_length=1, max_length=40)]

ACCESSIBLE = "access-able"
NOT_ACCESSIBLE = "not-access-able"
RETURNABLE = "return-able"
NOT_RETURNABLE = "not-return-able"


class StartRequest(ApiModel):
    user_id: UserId
    feature_endpoint_id: FeatureEndpointId
    hold: StrictBool | None = None
    hold_tokens: Tokens | None = None
    request_id: ReferenceId = None


class EndRequest(ApiModel):
    user_id: UserId
    feature_endpoint_id: FeatureEndpointId
    input_token: TokensOrZero
    output_token: TokensOrZero
    model: ModelName = None
    request_id: ReferenceId = None
    hold_id: HoldId = None


def _envelope(message: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "message": message, "data": data}


def _start_body(outcome: StartOutcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "user_id": outcome.user_id,
        "token": outcome.balance_tokens,
        "available": outcome.available_tokens,
        "status": ACCESSIBLE if outcome.accessible else NOT_ACCESSIBLE,
    }
    if outcome.hold_id is not None:
        data["hold_id"] = outcome.hold_id
        if outcome.hold_expires_at is not None:
            data["hold_expires_at"] = outcome.hold_expires_at.isoformat()
    message = "Token process started" if outcome.accessible else "Insufficient tokens"
    return _envelope(message, data)


def _end_body(outcome: EndOutcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "user_id": outcome.user_id,
        "token": outcome.balance_tokens,
        "cost": outcome.cost_tokens,
        "status": NOT_RETURNABLE if outcome.overdrawn else RETURNABLE,
        "exact_cost": outcome.exact_cost,
    }
    if outcome.transaction_id is not None:
        data["transaction_id"] = outcome.transaction_id
    if outcome.hold_id is not None:
        data["hold_id"] = outcome.hold_id
    if outcome.cost_tokens == 0:
        message = "No tokens used: nothing charged"
    elif outcome.overdrawn:
        message = "Usage recorded; the wallet is overdrawn and suspended until topped up"
    else:
        message = "Token process completed"
    return _envelope(message, data)


@router.post(
    "/start",
    summary="Check a user's access to a feature (and, in hold mode, reserve tokens)",
    responses=errors(
        WITH_BODY,
        403,
        404,
        409,
        dialect="B",
        notes={
            403: "Feature endpoint is not available in your package, or the key lacks the scope",
            404: "User wallet not found, or Feature endpoint not found",
        },
    ),
)
async def start(request: Request, body: StartRequest, principal: SpendKey) -> dict[str, Any]:
    """Answer whether the user may use the feature now.

    ``data.token`` is the wallet's balance and ``data.available`` what it may spend
    (balance - held). ``data.status`` is ``access-able`` when the wallet is active,
    the feature is in the user's plan and the available balance is at least the
    feature's ``min_balance_tokens`` (in hold mode: and the hold was placed, its id
    in ``data.hold_id``); otherwise ``not-access-able``.
    """
    outcome = await get_services(request).token_process.start(
        body.user_id,
        body.feature_endpoint_id,
        hold=body.hold,
        hold_tokens=body.hold_tokens,
        idempotency_key=idempotency_key(request, body.request_id),
        idempotency_scope=principal.app_slug,
        spend_cap=spend_cap_of(principal),
    )
    return _start_body(outcome)


@router.post(
    "/end",
    summary="Record what a call used: price it and charge it in full",
    responses=errors(
        WITH_BODY,
        404,
        409,
        dialect="B",
        notes={404: "User wallet not found, Feature endpoint not found, or Hold not found"},
    ),
)
async def end(request: Request, body: EndRequest, principal: SpendKey) -> dict[str, Any]:
    """Price the usage by the feature's rule (for ``model`` and the user's plan) and
    charge it, in full even past zero: the work already happened.

    ``data.cost`` is the whole-token cost (``data.exact_cost`` before the one
    rounding up) and ``data.token`` the balance after it. ``data.status`` is
    ``return-able`` when the wallet still covers its usage (its balance after the
    charge is at least what it holds: with no other holds pending, balance >= 0) and
    ``not-return-able`` when the usage overdrew it; the wallet is then suspended
    until a top-up covers it. ``input_token = output_token = 0`` charges nothing
    (and releases the hold, if any). With ``hold_id`` (or the start's
    ``request_id``) the hold is captured and the rest released.
    """
    outcome = await get_services(request).token_process.end(
        body.user_id,
        body.feature_endpoint_id,
        Usage(body.input_token, body.output_token),
        model=body.model,
        hold_id=body.hold_id,
        idempotency_key=idempotency_key(request, body.request_id),
        idempotency_scope=principal.app_slug,
        spend_cap=spend_cap_of(principal),
    )
    return _end_body(outcome)


# Both routes, served first by tokenbank.api.direct (issue 15).
DIRECT = (
    Direct("POST", "/api/token-process/start", start, scope="spend", body_model=StartRequest),
    Direct("POST", "/api/token-process/end", end, scope="spend", body_model=EndRequest),
)
