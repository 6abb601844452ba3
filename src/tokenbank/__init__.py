"""tokenbank: a self-hosted token billing service.

The embedded API (the whole ledger in-process, no network hop)::

    from tokenbank import TokenService

    async with TokenService("sqlite+aiosqlite:///tokens.db") as service:
        await service.open_wallet("user-1")
        result = await service.charge_for_operation("user-1", "image_generation")
"""

from tokenbank.clock import ManualClock
from tokenbank.ledger.audit import AuditReport
from tokenbank.ledger.errors import (
    ErrorCode,
    IdempotencyConflict,
    InvalidInput,
    TokenBankError,
)
from tokenbank.ledger.results import (
    Affordability,
    BalanceInfo,
    HoldResult,
    HoldView,
    LedgerEntryView,
    OperationResult,
    UserStatistics,
    WalletResult,
)
from tokenbank.service import LedgerView, OperationMetrics, TokenService
from tokenbank.sync import SyncTokenService

__all__ = [
    "Affordability",
    "AuditReport",
    "BalanceInfo",
    "ErrorCode",
    "HoldResult",
    "HoldView",
    "IdempotencyConflict",
    "InvalidInput",
    "LedgerEntryView",
    "LedgerView",
    "ManualClock",
    "OperationMetrics",
    "OperationResult",
    "SyncTokenService",
    "TokenBankError",
    "TokenService",
    "UserStatistics",
    "WalletResult",
]
