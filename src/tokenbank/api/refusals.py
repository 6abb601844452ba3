"""Business refusals (results with an error code) as HTTP answers."""

from __future__ import annotations

from typing import Any

from tokenbank.api.errors import ApiError
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.results import HoldResult, OperationResult

REFUSAL_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INSUFFICIENT_TOKENS: 402,
    ErrorCode.WALLET_NOT_FOUND: 404,
    ErrorCode.WALLET_SUSPENDED: 403,
    ErrorCode.WALLET_CLOSED: 403,
    ErrorCode.HOLD_NOT_FOUND: 404,
    ErrorCode.HOLD_NOT_PENDING: 409,
    ErrorCode.HOLD_EXPIRED: 409,
    ErrorCode.DEBIT_NOT_FOUND: 404,
    ErrorCode.REFUND_EXCEEDS_DEBIT: 409,
    ErrorCode.REFUND_EXCEEDS_SPENT: 409,
    ErrorCode.CREDIT_NOT_FOUND: 404,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    # Not the wallet's tokens: the API key's cap for the UTC day (issue 14).
    ErrorCode.DAILY_SPEND_CAP_EXCEEDED: 402,
}


def buy_tokens_url(public_url: str) -> str:
    return f"{public_url.rstrip('/')}/tokens"


def refusal(result: OperationResult | HoldResult, *, public_url: str) -> ApiError:
    code = result.error_code or ErrorCode.INSUFFICIENT_TOKENS
    status = REFUSAL_STATUS[code]
    message = result.error or code.value
    if code == ErrorCode.INSUFFICIENT_TOKENS:
        return ApiError(
            status,
            message,
            code=code.value,
            available=result.available_tokens,
            required=result.required_tokens,
            buyTokensUrl=buy_tokens_url(public_url),
        )
    extra: dict[str, Any] = {}
    if result.available_tokens is not None:
        extra["available"] = result.available_tokens
    if result.required_tokens is not None:
        extra["required"] = result.required_tokens
    return ApiError(status, message, code=code.value, **extra)
