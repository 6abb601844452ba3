"""Credits that take effect later (decision 13).

A credit with ``effective_at`` in the future changes nothing in the books: it waits
in ``scheduled_credits``. Once its time has come it is applied as an ordinary credit
(a grant, with the terms it was given) by whichever comes first: the sweep
(``tokenbank serve`` and ``tokenbank jobs run``), or a spend or hold of the wallet
that would otherwise be refused (the writer catches the wallet up first). It is
applied once: the row names its credit, and a trigger lets that happen only once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.operations import Credit
from tokenbank.ledger.repository import scheduled as repo
from tokenbank.ledger.repository import writes as wallet_repo
from tokenbank.ledger.results import OperationResult, refused_operation


async def schedule_credit(conn: AsyncConnection, op: Credit, now: datetime) -> OperationResult:
    """Record a credit for later; the wallet stays as it is."""
    wallet = await wallet_repo.wallet_by_user(conn, op.user_id)
    if wallet is None:
        return refused_operation(ErrorCode.WALLET_NOT_FOUND, user_id=op.user_id)
    if wallet.status == "closed":
        return refused_operation(ErrorCode.WALLET_CLOSED, user_id=op.user_id)
    scheduled_id = await repo.insert_scheduled(
        conn,
        {
            "wallet_id": wallet.id,
            "operation_type": op.operation_type,
            "category": op.grant_category,
            "priority": op.priority,
            "amount_tokens": op.amount_tokens,
            "effective_at": op.effective_at,
            "expires_at": op.expires_at,
            "description": op.description,
            "metadata": op.metadata,
            "idempotency_scope": op.idempotency_scope,
            "idempotency_key": op.idempotency_key,
            "request_hash": op.request_hash() if op.idempotency_key else None,
            "created_at": now,
        },
    )
    return scheduled_result(wallet, scheduled_id, op.effective_at)


def scheduled_result(
    wallet: AnyRow, scheduled_id: int, effective_at: datetime | None, *, replayed: bool = False
) -> OperationResult:
    return OperationResult(
        success=True,
        new_balance=int(wallet.balance_tokens),
        user_id=wallet.user_id,
        scheduled_credit_id=scheduled_id,
        effective_at=effective_at,
        replayed=replayed,
    )


def credit_for(row: AnyRow, user_id: str) -> Credit:
    """The credit a scheduled row becomes when its time comes."""
    return Credit(
        user_id=user_id,
        amount_tokens=int(row.amount_tokens),
        operation_type=row.operation_type,
        category=row.category,
        priority=int(row.priority),
        expires_at=row.expires_at,
        description=row.description,
        metadata=row.metadata,
    )


async def replay(conn: AsyncConnection, scope: str, key: str) -> OperationResult | None:
    """The first answer to a keyed credit that was scheduled (applied since, or not)."""
    row = await repo.by_key(conn, scope, key)
    if row is None:
        return None
    result = scheduled_result(row, int(row.id), row.effective_at, replayed=True)
    return replace(result, transaction_id=row.transaction_id)  # None until applied
