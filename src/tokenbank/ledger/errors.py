"""The ledger's refusal codes and their messages.

Business refusals (insufficient tokens, unknown wallet, ...) are *results*, with a
machine-readable :class:`ErrorCode`, so callers never match on message text. Bad
input is an *exception* (:mod:`tokenbank.errors`): the call was wrong and nothing
was written.
"""

from __future__ import annotations

from enum import StrEnum

from tokenbank.errors import IDEMPOTENCY_CONFLICT_MESSAGE


class ErrorCode(StrEnum):
    INSUFFICIENT_TOKENS = "insufficient_tokens"
    WALLET_NOT_FOUND = "wallet_not_found"
    WALLET_SUSPENDED = "wallet_suspended"
    WALLET_CLOSED = "wallet_closed"
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_NOT_PENDING = "hold_not_pending"
    HOLD_EXPIRED = "hold_expired"
    DEBIT_NOT_FOUND = "debit_not_found"
    REFUND_EXCEEDS_DEBIT = "refund_exceeds_debit"
    REFUND_EXCEEDS_SPENT = "refund_exceeds_spent"
    CREDIT_NOT_FOUND = "credit_not_found"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    # The API key's daily spend cap (issue 14): not the wallet's balance.
    DAILY_SPEND_CAP_EXCEEDED = "daily_spend_cap_exceeded"


ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INSUFFICIENT_TOKENS: "Insufficient tokens",
    ErrorCode.WALLET_NOT_FOUND: "User wallet not found",
    ErrorCode.WALLET_SUSPENDED: "Wallet is suspended",
    ErrorCode.WALLET_CLOSED: "Wallet is closed",
    ErrorCode.HOLD_NOT_FOUND: "Hold not found",
    ErrorCode.HOLD_NOT_PENDING: "Hold is no longer pending",
    ErrorCode.HOLD_EXPIRED: "Hold has expired",
    ErrorCode.DEBIT_NOT_FOUND: "The debit to refund was not found for this user",
    ErrorCode.REFUND_EXCEEDS_DEBIT: "Refund exceeds what remains of the debit",
    ErrorCode.REFUND_EXCEEDS_SPENT: "Refund exceeds what the user has spent",
    ErrorCode.CREDIT_NOT_FOUND: "The credit to claw back was not found for this user",
    ErrorCode.IDEMPOTENCY_CONFLICT: IDEMPOTENCY_CONFLICT_MESSAGE,
    ErrorCode.DAILY_SPEND_CAP_EXCEEDED: "The API key's daily spend cap would be exceeded",
}
