"""The SQL of scheduled credits (decision 13): credits that take effect later."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.tables import scheduled_credits, wallets

_WAITING = scheduled_credits.c.transaction_id.is_(None)


async def insert_scheduled(conn: AsyncConnection, values: dict[str, Any]) -> int:
    statement = insert(scheduled_credits).values(values).returning(scheduled_credits.c.id)
    return int((await conn.execute(statement)).scalar_one())


async def due_for_wallet(conn: AsyncConnection, wallet_id: int, now: datetime) -> list[AnyRow]:
    """The wallet's credits whose time has come and that wait still, oldest first."""
    statement = (
        select(scheduled_credits)
        .where(
            scheduled_credits.c.wallet_id == wallet_id,
            scheduled_credits.c.effective_at <= now,
            _WAITING,
        )
        .order_by(scheduled_credits.c.effective_at, scheduled_credits.c.id)
    )
    return list((await conn.execute(statement)).all())


async def has_due(conn: AsyncConnection, wallet_id: int, now: datetime) -> bool:
    statement = select(scheduled_credits.c.id).where(
        scheduled_credits.c.wallet_id == wallet_id,
        scheduled_credits.c.effective_at <= now,
        _WAITING,
    )
    return (await conn.execute(statement.limit(1))).first() is not None


async def users_with_due(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Wallets (not closed) with a credit due, the longest-waiting first."""
    statement = (
        select(wallets.c.user_id)
        .join(scheduled_credits, scheduled_credits.c.wallet_id == wallets.c.id)
        .where(scheduled_credits.c.effective_at <= now, _WAITING, wallets.c.status != "closed")
        .group_by(wallets.c.user_id)
        .order_by(func.min(scheduled_credits.c.effective_at))
        .limit(limit)
    )
    return list((await conn.execute(statement)).scalars())


async def mark_applied(conn: AsyncConnection, scheduled_id: int, transaction_id: str) -> bool:
    statement = (
        update(scheduled_credits)
        .where(scheduled_credits.c.id == scheduled_id, _WAITING)
        .values(transaction_id=transaction_id)
    )
    return (await conn.execute(statement)).rowcount == 1


async def by_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    statement = (
        select(scheduled_credits, wallets.c.user_id, wallets.c.balance_tokens)
        .join(wallets, wallets.c.id == scheduled_credits.c.wallet_id)
        .where(
            scheduled_credits.c.idempotency_scope == scope,
            scheduled_credits.c.idempotency_key == key,
        )
    )
    return (await conn.execute(statement)).first()


async def waiting_for_wallets(
    conn: AsyncConnection, wallet_ids: Sequence[int], limit: int
) -> list[AnyRow]:
    """Credits still waiting, the soonest first."""
    statement = (
        select(scheduled_credits)
        .where(scheduled_credits.c.wallet_id.in_(wallet_ids), _WAITING)
        .order_by(scheduled_credits.c.effective_at, scheduled_credits.c.id)
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())
