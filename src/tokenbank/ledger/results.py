"""What the ledger answers: plain values with the seed's field names (the embedded API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenbank.ledger.errors import ERROR_MESSAGES, ErrorCode


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationResult:
    """The outcome of a credit, debit, refund or capture.

    ``success`` is False for a business refusal; ``error_code`` says which one and
    ``error`` says it in words. ``available_tokens`` and ``required_tokens`` explain
    an insufficient-tokens refusal.
    """

    success: bool
    new_balance: int | None = None
    ledger_entry_id: int | None = None
    transaction_id: str | None = None
    available_tokens: int | None = None
    required_tokens: int | None = None
    error: str | None = None
    error_code: ErrorCode | None = None
    replayed: bool = False
    user_id: str | None = None
    # A credit scheduled for later: its id and when it takes effect (no transaction yet).
    scheduled_credit_id: int | None = None
    effective_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldResult:
    """The outcome of placing, capturing or voiding a hold."""

    success: bool
    hold_id: str | None = None
    status: str | None = None
    amount_tokens: int | None = None
    captured_tokens: int | None = None
    expires_at: datetime | None = None
    new_balance: int | None = None
    available_tokens: int | None = None
    required_tokens: int | None = None
    ledger_entry_id: int | None = None
    transaction_id: str | None = None
    error: str | None = None
    error_code: ErrorCode | None = None
    replayed: bool = False
    user_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletResult:
    """The outcome of opening a wallet: created now, or found already open."""

    success: bool
    user_id: str
    created: bool
    new_balance: int
    welcome_bonus_tokens: int
    error: str | None = None
    error_code: ErrorCode | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClawbackResult:
    """The outcome of a clawback (decision 13): what it took back from the credit's
    grant, and what it could not (spent already, or needed by pending holds).

    ``transaction_id`` is None when nothing was taken. ``balance_after`` is the
    wallet's balance after the clawback; a replay of one that took nothing answers
    the balance at the replay.
    """

    success: bool
    user_id: str | None = None
    transaction_id: str | None = None
    clawed_tokens: int = 0
    not_clawed_tokens: int = 0
    balance_after: int | None = None
    error: str | None = None
    error_code: ErrorCode | None = None
    replayed: bool = False


LedgerResult = OperationResult | HoldResult | WalletResult | ClawbackResult


def refused_clawback(code: ErrorCode, **fields: Any) -> ClawbackResult:
    return ClawbackResult(success=False, error=ERROR_MESSAGES[code], error_code=code, **fields)


def refused_operation(code: ErrorCode, **fields: Any) -> OperationResult:
    return OperationResult(success=False, error=ERROR_MESSAGES[code], error_code=code, **fields)


def refused_hold(code: ErrorCode, **fields: Any) -> HoldResult:
    return HoldResult(success=False, error=ERROR_MESSAGES[code], error_code=code, **fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class Affordability:
    can_afford: bool
    cost: int
    balance: int
    available: int
    deficit: int
    error_code: ErrorCode | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceInfo:
    user_id: str
    tokens_balance: int
    tokens_spent: int
    held: int
    available: int
    status: str
    tier: str | None
    last_renewal_at: datetime | None
    created_at: datetime
    # What the balance is made of (decision 13): its paid and promotional grants, and
    # the next expiry of a grant that still holds tokens (None when none expires).
    paid_tokens: int = 0
    promotional_tokens: int = 0
    next_expiry_at: datetime | None = None
    next_expiry_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantView:
    """One grant of a wallet: what was granted and what remains of it.

    ``status``: ``active`` while it holds tokens, ``spent`` once consumed, ``expired``
    once its expiry passed (what it still ``remaining`` then backs pending holds).
    """

    grant_id: int
    user_id: str
    source: str
    category: str
    priority: int
    amount_tokens: int
    remaining_tokens: int
    expires_at: datetime | None
    created_at: datetime
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledCreditView:
    """A credit that waits for its ``effective_at`` (then it becomes a grant)."""

    scheduled_credit_id: int
    user_id: str
    source: str
    category: str
    priority: int
    amount_tokens: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntryView:
    id: int
    transaction_id: str
    operation_type: str
    tokens_amount: int
    balance_before: int
    balance_after: int
    description: str | None
    metadata: dict[str, Any] | None
    created_at: datetime
    refund_of: str | None
    hold_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserStatistics:
    total_spent: int
    total_earned: int
    net_change: int
    operation_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldView:
    hold_id: str
    user_id: str
    status: str
    amount_tokens: int
    captured_tokens: int | None
    operation_type: str
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None


@dataclass
class AuditReport:
    transactions: int = 0
    entries: int = 0
    wallets: int = 0
    system_balances: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems
