"""The ledger's tables as SQLAlchemy Core handles, for the statements of this package."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from tokenbank.db.models import (
    Grant,
    GrantMovement,
    Hold,
    IdempotencyKey,
    LedgerEntry,
    LedgerTransaction,
    OperationCost,
    PlanRenewal,
    ScheduledCredit,
    Wallet,
)

wallets = cast(Table, Wallet.__table__)
transactions = cast(Table, LedgerTransaction.__table__)
entries = cast(Table, LedgerEntry.__table__)
holds = cast(Table, Hold.__table__)
costs = cast(Table, OperationCost.__table__)
idempotency_keys = cast(Table, IdempotencyKey.__table__)
grants = cast(Table, Grant.__table__)
grant_movements = cast(Table, GrantMovement.__table__)
plan_renewals = cast(Table, PlanRenewal.__table__)
scheduled_credits = cast(Table, ScheduledCredit.__table__)
