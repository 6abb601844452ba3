"""Response views that several routes share: timestamps, wallets, operation results.

Each route module maps its own results; what more than one of them answers is
written here once, so the wire shape of a wallet or a settled operation is the same
wherever it appears.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import Request

from tokenbank.api.errors import ApiError
from tokenbank.api.refusals import refusal
from tokenbank.api.state import get_services
from tokenbank.ledger.errors import ERROR_MESSAGES, ErrorCode
from tokenbank.ledger.results import BalanceInfo, HoldResult, OperationResult

SettledResult = TypeVar("SettledResult", OperationResult, HoldResult)


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix; fractional seconds only when non-zero."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_utc_or_none(value: datetime | None) -> str | None:
    return iso_utc(value) if value is not None else None


def wallet_not_found() -> ApiError:
    code = ErrorCode.WALLET_NOT_FOUND
    return ApiError(404, ERROR_MESSAGES[code], code=code.value)


def balance_json(info: BalanceInfo) -> dict[str, Any]:
    """A wallet's balance as the balance, user and admin routes answer it."""
    return {
        "userId": info.user_id,
        "balance": info.tokens_balance,
        "available": info.available,
        "held": info.held,
        "spent": info.tokens_spent,
        "status": info.status,
        "plan": info.tier,
        "paid": info.paid_tokens,
        "promotional": info.promotional_tokens,
        "nextExpiry": _next_expiry(info),
    }


def _next_expiry(info: BalanceInfo) -> dict[str, Any] | None:
    if info.next_expiry_at is None:
        return None
    return {"at": iso_utc(info.next_expiry_at), "amount": info.next_expiry_tokens}


def operation_data(result: OperationResult) -> dict[str, Any]:
    return {
        "balance": result.new_balance,
        "ledgerEntryId": result.ledger_entry_id,
        "transactionId": result.transaction_id,
        "replayed": result.replayed,
    }


def settled(request: Request, result: SettledResult) -> SettledResult:
    """The result of an operation that succeeded; a refusal raises its HTTP answer."""
    if not result.success:
        raise refusal(result, public_url=get_services(request).settings.public_url)
    return result
