"""The Token Service dialect's estimation endpoint: what an action would cost, before committing.

``POST /api/estimate`` (scope ``read``) takes one of three bodies:

- ``{"userId"?, "action"}``: an operation type from the cost table (the Token Service dialect called
  it ``type``, which is accepted too);
- ``{"userId"?, "featureEndpointId"?, "model"?, "inputTokens"?, "outputTokens"?}``:
  a usage, priced by the feature's rule (or per unit by model without a feature)
  and the user's plan, exactly as ``/api/token-process/end`` would charge it;
- ``{"userId"?, "amount"}``: a plain amount.

It answers ``{"data": {action, cost, currentBalance, canAfford, remainingAfter,
exactCost, rule, ...}}``, where ``remainingAfter = max(0, balance - cost)`` and
``canAfford`` says whether the wallet is active and its available balance covers the
cost. Without ``userId``, ``currentBalance``, ``canAfford`` and ``remainingAfter``
are null. Nothing is written.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from fastapi import APIRouter, Request
from pydantic import AliasChoices, ConfigDict, Field, model_validator

from tokenbank.api.auth import ReadKey
from tokenbank.api.responses import AUTHENTICATED, WITH_BODY, errors
from tokenbank.api.schemas import ApiModel, OperationType, Tokens, TokensOrZero, UserId
from tokenbank.api.state import Services, get_services
from tokenbank.errors import InvalidInput
from tokenbank.plans.errors import WalletNotFound
from tokenbank.plans.service import WalletAccess
from tokenbank.pricing.calculator import Usage
from tokenbank.pricing.numbers import decimal_text
from tokenbank.pricing.rates import MAX_MODEL_NAME_LENGTH
from tokenbank.pricing.rules import rule_json

router = APIRouter(tags=["estimate (Token Service dialect)"], responses=errors(AUTHENTICATED))

USAGE_FIELDS = ("featureEndpointId", "model", "inputTokens", "outputTokens")


def _given(*names: str) -> dict[str, Any]:
    """JSON Schema: at least one of ``names`` is present and not null."""
    present = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in names
    ]
    return present[0] if len(present) == 1 else {"anyOf": present}


def _document_kinds(schema: dict[str, Any]) -> None:
    """Tell the OpenAPI document what the validator enforces: exactly one kind of
    body, and ``type`` as the Token Service dialect's name for ``action``."""
    properties = schema.setdefault("properties", {})
    if "action" in properties:
        properties["type"] = {**properties["action"], "title": "Type", "description": "= action"}
    schema["oneOf"] = [_given("action", "type"), _given("amount"), _given(*USAGE_FIELDS)]
    schema["not"] = {"required": ["action", "type"]}  # one name or the other, never both


class EstimateRequest(ApiModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_document_kinds)

    userId: UserId | None = None  # noqa: N815 - the wire contract's name
    action: OperationType | None = Field(
        default=None, validation_alias=AliasChoices("action", "type")
    )
    amount: Tokens | None = None
    featureEndpointId: Annotated[str, Field(min_length=1, max_length=128)] | None = None  # noqa: N815
    model: Annotated[str, Field(min_length=1, max_length=MAX_MODEL_NAME_LENGTH)] | None = None
    inputTokens: TokensOrZero | None = None  # noqa: N815
    outputTokens: TokensOrZero | None = None  # noqa: N815

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        usage = any(getattr(self, name) is not None for name in USAGE_FIELDS)
        kinds = [self.action is not None, self.amount is not None, usage]
        if sum(kinds) != 1:
            raise ValueError(
                "send exactly one of: action, amount, or a usage"
                " (featureEndpointId, model, inputTokens, outputTokens)"
            )
        return self


async def _wallet(services: Services, user_id: str | None) -> WalletAccess | None:
    if user_id is None:
        return None
    wallet = await services.plans.wallet_access(user_id)
    if wallet is None:
        raise WalletNotFound(user_id)
    return wallet


async def _action_cost(services: Services, action: str) -> int:
    costs = await services.tokens.get_operation_costs()
    if action not in costs:
        known = ", ".join(sorted(costs)) or "none"
        raise InvalidInput("action", f"unknown action {action!r} (known: {known})")
    return costs[action]


async def _priced(
    services: Services, body: EstimateRequest, wallet: WalletAccess | None
) -> dict[str, Any]:
    if body.action is not None:
        cost = await _action_cost(services, body.action)
        rule = {"type": "operation_cost", "operation": body.action}
        return {"action": body.action, "cost": cost, "exactCost": str(cost), "rule": rule}
    if body.amount is not None:
        rule = {"type": "amount"}
        return {
            "action": "amount",
            "cost": body.amount,
            "exactCost": str(body.amount),
            "rule": rule,
        }
    usage = Usage(body.inputTokens or 0, body.outputTokens or 0)
    quote, feature = await services.token_process.quote_usage(
        usage, feature_id=body.featureEndpointId, model=body.model, wallet=wallet
    )
    return {
        "action": body.featureEndpointId or "usage",
        "cost": quote.cost_tokens,
        "exactCost": decimal_text(quote.exact_cost),
        "rule": rule_json(quote.rule),
        "model": body.model,
        "profitPercent": decimal_text(quote.profit.percent),
        "pricingVersion": None if feature is None else feature.pricing_version,
    }


def _affordability(wallet: WalletAccess | None, cost: int) -> dict[str, Any]:
    if wallet is None:
        return {"currentBalance": None, "canAfford": None, "remainingAfter": None}
    return {
        "currentBalance": wallet.balance_tokens,
        "available": wallet.available_tokens,
        "canAfford": wallet.status == "active" and wallet.available_tokens >= cost,
        "remainingAfter": max(0, wallet.balance_tokens - cost),
    }


@router.post(
    "/api/estimate",
    summary="What an action or a usage would cost (writes nothing)",
    responses=errors(WITH_BODY, 404),
)
async def estimate(request: Request, body: EstimateRequest, principal: ReadKey) -> dict[str, Any]:
    services = get_services(request)
    wallet = await _wallet(services, body.userId)
    priced = await _priced(services, body, wallet)
    return {"data": {**priced, **_affordability(wallet, priced["cost"])}}
