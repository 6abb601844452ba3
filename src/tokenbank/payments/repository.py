"""SQL over the payment tables: packs, customers, purchases, events, subscriptions,
auto-recharge settings and the recharge outbox. The ledger's tables are the ledger's
(its repository marks a wallet's purchases)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import (
    AutoRechargeSetting,
    Purchase,
    Recharge,
    StripeCustomer,
    StripeEvent,
    StripeSubscription,
    TokenPack,
)
from tokenbank.db.rows import AnyRow

packs: Table = TokenPack.__table__  # type: ignore[assignment]
customers: Table = StripeCustomer.__table__  # type: ignore[assignment]
purchases: Table = Purchase.__table__  # type: ignore[assignment]
events: Table = StripeEvent.__table__  # type: ignore[assignment]
subscriptions: Table = StripeSubscription.__table__  # type: ignore[assignment]
auto_recharge: Table = AutoRechargeSetting.__table__  # type: ignore[assignment]
recharges: Table = Recharge.__table__  # type: ignore[assignment]


def _insert_ignoring_conflict(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on either engine."""
    dialect = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return dialect(table).values(**values).on_conflict_do_nothing()


# --- packs -----------------------------------------------------------------------------------


async def pack_rows(conn: AsyncConnection, *, active_only: bool) -> list[AnyRow]:
    query = select(packs).order_by(packs.c.sort_order, packs.c.price_cents, packs.c.id)
    if active_only:
        query = query.where(packs.c.active.is_(True))
    return list((await conn.execute(query)).all())


async def pack_row(conn: AsyncConnection, pack_id: str) -> AnyRow | None:
    return (await conn.execute(select(packs).where(packs.c.id == pack_id))).first()


async def insert_pack(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Whether the pack was created (False: one of that id exists)."""
    result = await conn.execute(_insert_ignoring_conflict(conn, packs, values))
    return bool(result.rowcount)


async def update_pack(conn: AsyncConnection, pack_id: str, values: dict[str, Any]) -> bool:
    result = await conn.execute(update(packs).where(packs.c.id == pack_id).values(**values))
    return bool(result.rowcount)


# --- customers -------------------------------------------------------------------------------


async def customer_id(conn: AsyncConnection, user_id: str) -> str | None:
    query = select(customers.c.customer_id).where(customers.c.user_id == user_id)
    found: str | None = (await conn.execute(query)).scalar()
    return found


async def user_of_customer(conn: AsyncConnection, customer: str) -> str | None:
    query = select(customers.c.user_id).where(customers.c.customer_id == customer)
    found: str | None = (await conn.execute(query)).scalar()
    return found


async def insert_customer(
    conn: AsyncConnection, user_id: str, customer: str, now: datetime
) -> None:
    values = {"user_id": user_id, "customer_id": customer, "created_at": now}
    await conn.execute(_insert_ignoring_conflict(conn, customers, values))


# --- purchases -------------------------------------------------------------------------------


async def insert_purchase(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(purchases).values(**values))


async def purchase_row(
    conn: AsyncConnection, purchase_id: str, *, for_update: bool = False
) -> AnyRow | None:
    query = select(purchases).where(purchases.c.id == purchase_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def purchase_by_intent(
    conn: AsyncConnection, payment_intent_id: str, *, for_update: bool = False
) -> AnyRow | None:
    query = select(purchases).where(purchases.c.stripe_payment_intent_id == payment_intent_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def update_purchase(conn: AsyncConnection, purchase_id: str, values: dict[str, Any]) -> None:
    await conn.execute(update(purchases).where(purchases.c.id == purchase_id).values(**values))


async def purchase_rows(
    conn: AsyncConnection, *, user_id: str | None, limit: int, offset: int
) -> list[AnyRow]:
    query = select(purchases).order_by(purchases.c.created_at.desc(), purchases.c.id.desc())
    if user_id is not None:
        query = query.where(purchases.c.user_id == user_id)
    return list((await conn.execute(query.limit(limit).offset(offset))).all())


# --- events ----------------------------------------------------------------------------------


async def claim_event(conn: AsyncConnection, event_id: str, event_type: str, now: datetime) -> bool:
    """Record an event as taken in; False when it already was.

    On PostgreSQL a second delivery racing the first waits here on the first's
    uncommitted row, then finds it: one of them applies the event, never both.
    """
    values = {
        "id": event_id,
        "type": event_type,
        "outcome": "ignored",
        "detail": None,
        "received_at": now,
    }
    result = await conn.execute(_insert_ignoring_conflict(conn, events, values))
    return bool(result.rowcount)


async def settle_event(
    conn: AsyncConnection, event_id: str, *, outcome: str, detail: str, purchase_id: str | None
) -> None:
    values = {"outcome": outcome, "detail": detail[:500], "purchase_id": purchase_id}
    await conn.execute(update(events).where(events.c.id == event_id).values(**values))


async def event_row(conn: AsyncConnection, event_id: str) -> AnyRow | None:
    return (await conn.execute(select(events).where(events.c.id == event_id))).first()


# --- subscriptions ---------------------------------------------------------------------------


async def subscription_row(conn: AsyncConnection, subscription_id: str) -> AnyRow | None:
    query = select(subscriptions).where(subscriptions.c.id == subscription_id)
    return (await conn.execute(query)).first()


async def upsert_subscription(conn: AsyncConnection, values: dict[str, Any]) -> None:
    found = await subscription_row(conn, values["id"])
    if found is None:
        await conn.execute(insert(subscriptions).values(**values))
        return
    changes = {k: v for k, v in values.items() if k not in ("id", "created_at")}
    await conn.execute(
        update(subscriptions).where(subscriptions.c.id == values["id"]).values(**changes)
    )


# --- auto-recharge ---------------------------------------------------------------------------


async def auto_recharge_row(
    conn: AsyncConnection, user_id: str, *, for_update: bool = False
) -> AnyRow | None:
    query = select(auto_recharge).where(auto_recharge.c.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def save_auto_recharge(conn: AsyncConnection, values: dict[str, Any]) -> None:
    if await auto_recharge_row(conn, values["user_id"]) is None:
        await conn.execute(insert(auto_recharge).values(**values))
        return
    changes = {k: v for k, v in values.items() if k != "user_id"}
    await conn.execute(
        update(auto_recharge).where(auto_recharge.c.user_id == values["user_id"]).values(**changes)
    )


async def queue_recharge(
    conn: AsyncConnection, wallet_id: int, available_tokens: int, now: datetime
) -> bool:
    """Queue a recharge unless one is in flight for the wallet; whether one was queued."""
    values = {
        "wallet_id": wallet_id,
        "status": "queued",
        "available_tokens": available_tokens,
        "created_at": now,
        "updated_at": now,
    }
    dialect = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect(recharges)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["wallet_id"], index_where=_in_flight())
    )
    return bool((await conn.execute(statement)).rowcount)


def _in_flight() -> Any:
    return recharges.c.status.in_(("queued", "processing"))


async def requeue_stale_recharges(
    conn: AsyncConnection, older_than: datetime, now: datetime
) -> int:
    """Queue again the recharges a worker claimed and never finished (it was killed):
    their charge is retried under the same idempotency key, so Stripe answers a charge
    that went through instead of making a second one."""
    result = await conn.execute(
        update(recharges)
        .where(recharges.c.status == "processing", recharges.c.updated_at < older_than)
        .values(status="queued", error="its worker stopped", updated_at=now)
    )
    return int(result.rowcount)


async def claim_recharges(conn: AsyncConnection, limit: int, now: datetime) -> list[AnyRow]:
    """Take up to ``limit`` queued recharges for this worker (processing).

    ``SKIP LOCKED`` on PostgreSQL: two workers never take the same row; SQLite has
    one writer at a time.
    """
    query = (
        select(recharges)
        .where(recharges.c.status == "queued")
        .order_by(recharges.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list((await conn.execute(query)).all())
    if rows:
        ids = [row.id for row in rows]
        await conn.execute(
            update(recharges)
            .where(recharges.c.id.in_(ids))
            .values(status="processing", updated_at=now)
        )
    return rows


async def finish_recharge(
    conn: AsyncConnection,
    recharge_id: int,
    *,
    status: str,
    purchase_id: str | None,
    error: str | None,
    now: datetime,
) -> None:
    values = {"status": status, "purchase_id": purchase_id, "error": error, "updated_at": now}
    await conn.execute(update(recharges).where(recharges.c.id == recharge_id).values(**values))


async def recharge_rows(conn: AsyncConnection, wallet_id: int) -> list[AnyRow]:
    query = select(recharges).where(recharges.c.wallet_id == wallet_id).order_by(recharges.c.id)
    return list((await conn.execute(query)).all())


# --- the admin dashboard's figures -----------------------------------------------------------


def _count_where(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def paid_purchase_totals(conn: AsyncConnection, since: datetime) -> list[AnyRow]:
    """Per currency, over paid purchases: (currency, purchases, buyers, cents,
    refunded_cents, recent: those paid since ``since``). One aggregate statement."""
    query = (
        select(
            purchases.c.currency,
            func.count().label("purchases"),
            func.count(func.distinct(purchases.c.user_id)).label("buyers"),
            func.sum(purchases.c.amount_cents).label("cents"),
            func.sum(purchases.c.refunded_cents).label("refunded_cents"),
            _count_where(purchases.c.paid_at >= since).label("recent"),
        )
        .where(purchases.c.status == "paid")
        .group_by(purchases.c.currency)
        .order_by(purchases.c.currency)
    )
    return list((await conn.execute(query)).all())


async def recharge_counts(conn: AsyncConnection) -> dict[str, int]:
    """How many auto-recharges are in each status."""
    query = select(recharges.c.status, func.count()).group_by(recharges.c.status)
    return {row[0]: int(row[1]) for row in await conn.execute(query)}


async def event_counts(conn: AsyncConnection) -> dict[str, int]:
    """How many Stripe events were taken in with each outcome (applied, ignored)."""
    query = select(events.c.outcome, func.count()).group_by(events.c.outcome)
    return {row[0]: int(row[1]) for row in await conn.execute(query)}
