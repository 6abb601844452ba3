"""What payments need from the wallets table: marking a purchase, finding the wallet
behind a recharge. Only the ledger names its tables (tests/test_layout.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.tables import wallets


async def mark_purchase(conn: AsyncConnection, user_id: str, now: datetime) -> None:
    """Remember when the wallet last bought tokens."""
    await conn.execute(
        update(wallets).where(wallets.c.user_id == user_id).values(last_purchase_at=now)
    )


# What payments read of a wallet: who, its state, what it may spend, its purchases.
_PAYMENT_VIEW = (
    wallets.c.id,
    wallets.c.user_id,
    wallets.c.status,
    (wallets.c.balance_tokens - wallets.c.held_tokens).label("available_tokens"),
    wallets.c.recharge_below_tokens,
    wallets.c.last_purchase_at,
    wallets.c.plan,
)


async def wallet_for_recharge(conn: AsyncConnection, wallet_id: int) -> AnyRow | None:
    """A wallet's user, state and available tokens, by its id."""
    query = select(*_PAYMENT_VIEW).where(wallets.c.id == wallet_id)
    return (await conn.execute(query)).first()


async def wallet_of_user(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    """The same, by user id."""
    query = select(*_PAYMENT_VIEW).where(wallets.c.user_id == user_id)
    return (await conn.execute(query)).first()
