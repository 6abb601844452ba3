"""The SQL of grants and their movements (decision 13, docs/architecture.md).

A spend reads its wallet's live grants (those with tokens left), decides in memory
(:mod:`tokenbank.ledger.grants`), then writes the remainders' changes and one
movement per change, before the header that seals its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.tables import grant_movements, grants, transactions, wallets

LIVE_GRANT_COLUMNS = (
    grants.c.id,
    grants.c.wallet_id,
    grants.c.category,
    grants.c.priority,
    grants.c.expires_at,
    grants.c.remaining_tokens,
)
# Movements a refund can give tokens back to.
CONSUMPTION_KINDS = ("consume", "capture", "settle")

_LIVE_GRANTS = (
    select(*LIVE_GRANT_COLUMNS)
    .where(
        grants.c.wallet_id.in_(bindparam("wallet_ids", expanding=True)),
        grants.c.live == true(),
    )
    .order_by(grants.c.wallet_id, grants.c.id)
)
_ADD_TO_GRANT = (
    update(grants)
    .where(grants.c.id == bindparam("grant_id"))
    .values(remaining_tokens=grants.c.remaining_tokens + bindparam("delta"))
)


async def live_grants(conn: AsyncConnection, wallet_ids: Sequence[int]) -> list[AnyRow]:
    """The grants with tokens left of some wallets, by wallet then age."""
    return list((await conn.execute(_LIVE_GRANTS, {"wallet_ids": list(wallet_ids)})).all())


async def grant_ids_of(conn: AsyncConnection, transaction_id: str) -> set[int]:
    """The grants one transaction made (a credit makes one)."""
    statement = select(grants.c.id).where(grants.c.transaction_id == transaction_id)
    return {int(grant_id) for grant_id in (await conn.execute(statement)).scalars()}


async def grant_of_credit(conn: AsyncConnection, transaction_id: str) -> AnyRow | None:
    """The grant a credit made (its terms: category, priority, expiry)."""
    query = select(grants).where(grants.c.transaction_id == transaction_id)
    return (await conn.execute(query)).first()


async def insert_grant(conn: AsyncConnection, values: dict[str, Any]) -> int:
    statement = insert(grants).returning(grants.c.id)
    return int((await conn.execute(statement, values)).scalar_one())


async def add_to_grants(conn: AsyncConnection, deltas: list[dict[str, int]]) -> None:
    """Change remainders: ``{"grant_id": id, "delta": tokens}`` each."""
    await conn.execute(_ADD_TO_GRANT, deltas)


async def insert_movements(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(insert(grant_movements), rows)


async def set_next_grant_event(
    conn: AsyncConnection, wallet_id: int, at: datetime | None, now: datetime
) -> None:
    statement = (
        update(wallets)
        .where(wallets.c.id == wallet_id)
        .values(next_grant_event_at=at, updated_at=now)
    )
    await conn.execute(statement)


async def unreturned_consumptions(
    conn: AsyncConnection, wallet_id: int, *, transaction_id: str | None, limit: int
) -> list[AnyRow]:
    """Consumptions of a wallet (or of one transaction) with tokens not yet given back,
    newest first: (id, grant_id, unreturned)."""
    returns = grant_movements.alias("returns")
    returned = (
        select(func.coalesce(func.sum(returns.c.amount_tokens), 0))
        .where(returns.c.returns_movement_id == grant_movements.c.id)
        .scalar_subquery()
    )
    unreturned = -grant_movements.c.amount_tokens - returned
    # Through the wallet's transactions (their wallet index), newest first.
    statement = (
        select(grant_movements.c.id, grant_movements.c.grant_id, unreturned.label("unreturned"))
        .join(transactions, transactions.c.id == grant_movements.c.transaction_id)
        .where(
            transactions.c.wallet_id == wallet_id,
            grant_movements.c.kind.in_(CONSUMPTION_KINDS),
            unreturned > 0,
        )
        .order_by(transactions.c.created_at.desc(), grant_movements.c.id.desc())
        .limit(limit)
    )
    if transaction_id is not None:
        statement = statement.where(grant_movements.c.transaction_id == transaction_id)
    return list((await conn.execute(statement)).all())


async def wallets_with_due_grants(conn: AsyncConnection, now: datetime, limit: int) -> list[str]:
    """Users whose grants have an expiry that has passed and not been applied."""
    statement = (
        select(wallets.c.user_id)
        .where(wallets.c.next_grant_event_at <= now)
        .order_by(wallets.c.next_grant_event_at)
        .limit(limit)
    )
    return list((await conn.execute(statement)).scalars())
