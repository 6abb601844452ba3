"""tokenbank: a self-hosted token billing service.

The embedded API (the whole ledger in-process, no network hop)::

    from tokenbank import TokenService

    async with TokenService("sqlite+aiosqlite:///tokens.db") as service:
        await service.open_wallet("user-1")
        result = await service.charge_for_operation("user-1", "image_generation")

The names below are imported on first use (PEP 562), not when the package is: an
app that only uses the SDK (``import tokenbank.client``) must not pull in the
server's dependencies (SQLAlchemy, FastAPI, ...), and importing ``tokenbank.client``
imports this package first.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module
from typing import TYPE_CHECKING, Any

# The SDK, ``tokenbank.client``, is its own distribution (tokenbank-client, in
# clients/python), which ships no ``tokenbank/__init__.py``. Installed into
# site-packages, both share one ``tokenbank`` directory; installed editable (``make
# install``), each has its own on ``sys.path`` and this regular package would hide
# the SDK's: extend_path adds every other ``tokenbank`` directory on ``sys.path``.
__path__ = pkgutil.extend_path(__path__, __name__)

if TYPE_CHECKING:
    from tokenbank.clock import ManualClock
    from tokenbank.errors import IdempotencyConflict, InvalidInput, TokenBankError
    from tokenbank.ledger.errors import ErrorCode
    from tokenbank.ledger.results import (
        Affordability,
        AuditReport,
        BalanceInfo,
        ClawbackResult,
        GrantView,
        HoldResult,
        HoldView,
        LedgerEntryView,
        OperationResult,
        UserStatistics,
        WalletResult,
    )
    from tokenbank.ledger.service import LedgerView, OperationMetrics, TokenService
    from tokenbank.ledger.sync import SyncTokenService
    from tokenbank.renewals.results import RenewalBatchResult, RenewalEligibility, RenewalResult
    from tokenbank.renewals.service import MonthlyRenewalService

# Each public name and the module that defines it.
_EXPORTS: dict[str, str] = {
    "Affordability": "tokenbank.ledger.results",
    "AuditReport": "tokenbank.ledger.results",
    "BalanceInfo": "tokenbank.ledger.results",
    "ClawbackResult": "tokenbank.ledger.results",
    "ErrorCode": "tokenbank.ledger.errors",
    "GrantView": "tokenbank.ledger.results",
    "HoldResult": "tokenbank.ledger.results",
    "HoldView": "tokenbank.ledger.results",
    "IdempotencyConflict": "tokenbank.errors",
    "InvalidInput": "tokenbank.errors",
    "LedgerEntryView": "tokenbank.ledger.results",
    "LedgerView": "tokenbank.ledger.service",
    "ManualClock": "tokenbank.clock",
    "MonthlyRenewalService": "tokenbank.renewals.service",
    "OperationMetrics": "tokenbank.ledger.service",
    "OperationResult": "tokenbank.ledger.results",
    "RenewalBatchResult": "tokenbank.renewals.results",
    "RenewalEligibility": "tokenbank.renewals.results",
    "RenewalResult": "tokenbank.renewals.results",
    "SyncTokenService": "tokenbank.ledger.sync",
    "TokenBankError": "tokenbank.errors",
    "TokenService": "tokenbank.ledger.service",
    "UserStatistics": "tokenbank.ledger.results",
    "WalletResult": "tokenbank.ledger.results",
}

__all__ = [
    "Affordability",
    "AuditReport",
    "BalanceInfo",
    "ClawbackResult",
    "ErrorCode",
    "GrantView",
    "HoldResult",
    "HoldView",
    "IdempotencyConflict",
    "InvalidInput",
    "LedgerEntryView",
    "LedgerView",
    "ManualClock",
    "MonthlyRenewalService",
    "OperationMetrics",
    "OperationResult",
    "RenewalBatchResult",
    "RenewalEligibility",
    "RenewalResult",
    "SyncTokenService",
    "TokenBankError",
    "TokenService",
    "UserStatistics",
    "WalletResult",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tokenbank' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
