"""The SQL of plan renewals (decision 16): due wallets, the renewal record, a wallet's
earlier allocations. The renewal service (``tokenbank.renewals``) calls it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import Plan
from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.tables import grants, wallets
from tokenbank.ledger.repository.tables import plan_renewals as renewals
from tokenbank.ledger.repository.writes import lock_wallets

plans = cast(Table, Plan.__table__)

RENEWAL_SOURCE = "renewal"

_WALLET_AND_PLAN = (
    wallets.c.id,
    wallets.c.user_id,
    wallets.c.status,
    wallets.c.balance_tokens,
    wallets.c.held_tokens,
    wallets.c.plan,
    wallets.c.plan_since,
    wallets.c.renewal_due_at,
    wallets.c.last_renewal_at,
    plans.c.monthly_allocation_tokens,
    plans.c.allocation_policy,
    plans.c.rollover_cap_tokens,
)


def _wallet_and_plan() -> Any:
    return select(*_WALLET_AND_PLAN).outerjoin(plans, plans.c.name == wallets.c.plan)


async def wallet_and_plan(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    statement = _wallet_and_plan().where(wallets.c.user_id == user_id)
    return (await conn.execute(statement)).first()


async def lock_wallet_and_plan(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    """The wallet row locked (PostgreSQL; SQLite's write transaction is the lock), then
    read with its plan.

    Two statements, not one ``FOR UPDATE OF wallets`` join: a statement that waited
    for the lock gets the wallet's newest version but the plans row of its own
    snapshot, so a plan change committed meanwhile paired the new plan name with the
    old plan's terms (or none). Under READ COMMITTED the second statement's snapshot
    is taken after the lock is held.
    """
    if not await lock_wallets(conn, [user_id]):
        return None
    return await wallet_and_plan(conn, user_id)


async def due_user_ids(
    conn: AsyncConnection, now: datetime, *, plan: str | None, limit: int | None
) -> list[str]:
    """Active wallets whose plan allocation is due, the longest-waiting first."""
    statement = (
        select(wallets.c.user_id)
        .join(plans, plans.c.name == wallets.c.plan)
        .where(
            wallets.c.renewal_due_at <= now,
            wallets.c.status == "active",
            plans.c.monthly_allocation_tokens > 0,
        )
        .order_by(wallets.c.renewal_due_at, wallets.c.id)
    )
    if plan is not None:
        statement = statement.where(wallets.c.plan == plan)
    if limit is not None:
        statement = statement.limit(limit)
    return list((await conn.execute(statement)).scalars())


async def renewal_exists(conn: AsyncConnection, wallet_id: int, period_start: datetime) -> bool:
    statement = select(renewals.c.wallet_id).where(
        renewals.c.wallet_id == wallet_id, renewals.c.period_start == period_start
    )
    return (await conn.execute(statement)).first() is not None


async def insert_renewal(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(renewals).values(values))


async def mark_renewed(
    conn: AsyncConnection, wallet_id: int, *, renewed_at: datetime, due_at: datetime
) -> None:
    statement = (
        update(wallets)
        .where(wallets.c.id == wallet_id)
        .values(last_renewal_at=renewed_at, renewal_due_at=due_at, updated_at=renewed_at)
    )
    await conn.execute(statement)


async def live_allocations(
    conn: AsyncConnection, wallet_id: int, plan: str, now: datetime
) -> list[AnyRow]:
    """What the plan's earlier allocations to the wallet still hold (unexpired).

    Allocations of another plan the wallet was on keep the expiry they were granted
    with: a plan's policy applies to its own allocations only.
    """
    statement = (
        select(
            grants.c.id,
            grants.c.category,
            grants.c.priority,
            grants.c.expires_at,
            grants.c.remaining_tokens,
        )
        .join(
            renewals,
            (renewals.c.wallet_id == grants.c.wallet_id)
            & (renewals.c.transaction_id == grants.c.transaction_id),
        )
        .where(
            grants.c.wallet_id == wallet_id,
            grants.c.source == RENEWAL_SOURCE,
            grants.c.remaining_tokens > 0,
            grants.c.expires_at.is_(None) | (grants.c.expires_at > now),
            renewals.c.plan == plan,
        )
        .order_by(grants.c.id)
    )
    return list((await conn.execute(statement)).all())


async def renewal_rows(conn: AsyncConnection, wallet_id: int, limit: int) -> list[AnyRow]:
    statement = (
        select(renewals)
        .where(renewals.c.wallet_id == wallet_id)
        .order_by(renewals.c.period_start.desc())
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())
