"""SQL over the outbox (``events``), webhook endpoints, deliveries and their attempts,
and the balance alert levels. The events themselves are written by triggers
(migration ``0013_outbox.py``), never here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import (
    BalanceAlertLevels,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from tokenbank.db.rows import AnyRow

levels: Table = BalanceAlertLevels.__table__  # type: ignore[assignment]
events: Table = Event.__table__  # type: ignore[assignment]
endpoints: Table = WebhookEndpoint.__table__  # type: ignore[assignment]
deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]
attempts: Table = WebhookAttempt.__table__  # type: ignore[assignment]


# --- alert levels ----------------------------------------------------------------------------


async def alert_levels(conn: AsyncConnection) -> AnyRow | None:
    return (await conn.execute(select(levels).where(levels.c.id == 1))).first()


async def set_alert_levels(
    conn: AsyncConnection, low_tokens: int, critical_tokens: int, now: datetime
) -> None:
    """Move the levels (a trigger copies them onto every wallet)."""
    await conn.execute(
        update(levels)
        .where(levels.c.id == 1)
        .values(low_tokens=low_tokens, critical_tokens=critical_tokens, updated_at=now)
    )


# --- events ----------------------------------------------------------------------------------


async def event_row(conn: AsyncConnection, event_id: str) -> AnyRow | None:
    return (await conn.execute(select(events).where(events.c.id == event_id))).first()


async def user_events(conn: AsyncConnection, user_id: str, limit: int) -> list[AnyRow]:
    query = (
        select(events)
        .where(events.c.user_id == user_id)
        .order_by(events.c.created_at.desc(), events.c.id.desc())
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def claim_unfanned_events(conn: AsyncConnection, limit: int) -> list[AnyRow]:
    """Events whose deliveries are not made yet, locked (``SKIP LOCKED``: another
    worker fans out others)."""
    query = (
        select(events)
        .where(events.c.fanned_out_at.is_(None))
        .order_by(events.c.created_at, events.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await conn.execute(query)).all())


async def mark_fanned_out(conn: AsyncConnection, event_ids: list[str], now: datetime) -> None:
    await conn.execute(update(events).where(events.c.id.in_(event_ids)).values(fanned_out_at=now))


# --- endpoints -------------------------------------------------------------------------------


async def insert_endpoint(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(endpoints).values(**values))


async def endpoint_row(conn: AsyncConnection, endpoint_id: str) -> AnyRow | None:
    return (await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))).first()


async def endpoint_rows(conn: AsyncConnection, app_id: int | None = None) -> list[AnyRow]:
    query = select(endpoints).order_by(endpoints.c.created_at, endpoints.c.id)
    if app_id is not None:
        query = query.where(endpoints.c.app_id == app_id)
    return list((await conn.execute(query)).all())


async def enabled_endpoints(conn: AsyncConnection) -> list[AnyRow]:
    query = select(endpoints).where(endpoints.c.enabled.is_(True)).order_by(endpoints.c.id)
    return list((await conn.execute(query)).all())


async def update_endpoint(conn: AsyncConnection, endpoint_id: str, values: dict[str, Any]) -> None:
    await conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(**values))


async def delete_endpoint(conn: AsyncConnection, endpoint_id: str) -> None:
    """An endpoint and its delivery log go together."""
    delivery_ids = select(deliveries.c.id).where(deliveries.c.endpoint_id == endpoint_id)
    await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(delivery_ids)))
    await conn.execute(delete(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
    await conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))


# --- deliveries ------------------------------------------------------------------------------


async def insert_deliveries(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """One delivery per (event, endpoint): a second fan-out of an event adds nothing."""
    if not rows:
        return
    dialect = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect(deliveries).values(rows).on_conflict_do_nothing()
    await conn.execute(statement)


async def claim_deliveries(
    conn: AsyncConnection, limit: int, now: datetime, lease_until: datetime
) -> list[AnyRow]:
    """Take up to ``limit`` due deliveries: each one's attempt count goes up (the
    claim's fencing token) and it is not due again until ``lease_until``, so no other
    worker takes it while this one sends it; a worker killed mid-send leaves it due
    again when the lease ends. ``SKIP LOCKED`` on PostgreSQL, one writer on SQLite."""
    due = (
        select(deliveries.c.id)
        .where(
            deliveries.c.status == "pending",
            deliveries.c.next_attempt_at <= now,
            # A disabled endpoint's deliveries wait for it to be enabled again.
            deliveries.c.endpoint_id.in_(select(endpoints.c.id).where(endpoints.c.enabled)),
        )
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [row.id for row in (await conn.execute(due)).all()]
    if not ids:
        return []
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(ids))
        .values(attempts=deliveries.c.attempts + 1, next_attempt_at=lease_until, updated_at=now)
    )
    query = (
        select(
            deliveries,
            endpoints.c.url,
            endpoints.c.secret,
            events.c.type,
            events.c.payload,
            events.c.created_at.label("event_created_at"),
        )
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
        .join(events, events.c.id == deliveries.c.event_id)
        .where(deliveries.c.id.in_(ids))
        .order_by(deliveries.c.id)
    )
    return list((await conn.execute(query)).all())


async def record_attempt(
    conn: AsyncConnection,
    delivery_id: int,
    attempt: int,
    values: dict[str, Any],
    log: dict[str, Any],
) -> bool:
    """Record attempt ``attempt``'s outcome, only if the delivery is still this
    claim's (pending, same attempt count): a worker whose lease ran out records
    nothing over the worker that took the delivery after it."""
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.status == "pending",
            deliveries.c.attempts == attempt,
        )
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    await conn.execute(insert(attempts).values(delivery_id=delivery_id, attempt=attempt, **log))
    return True


async def delivery_rows(
    conn: AsyncConnection, endpoint_id: str, limit: int, status: str | None = None
) -> list[AnyRow]:
    query = (
        select(deliveries, events.c.type)
        .join(events, events.c.id == deliveries.c.event_id)
        .where(deliveries.c.endpoint_id == endpoint_id)
        .order_by(deliveries.c.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(deliveries.c.status == status)
    return list((await conn.execute(query)).all())


async def attempt_rows(conn: AsyncConnection, delivery_ids: list[int]) -> list[AnyRow]:
    query = (
        select(attempts)
        .where(attempts.c.delivery_id.in_(delivery_ids))
        .order_by(attempts.c.delivery_id, attempts.c.attempt)
    )
    return list((await conn.execute(query)).all())


async def delivery_of(conn: AsyncConnection, event_id: str, endpoint_id: str) -> AnyRow | None:
    query = select(deliveries).where(
        deliveries.c.event_id == event_id, deliveries.c.endpoint_id == endpoint_id
    )
    return (await conn.execute(query.with_for_update())).first()


async def requeue_delivery(conn: AsyncConnection, delivery_id: int, now: datetime) -> None:
    """Due now again, whatever it was (manual redelivery); its attempts keep counting."""
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id)
        .values(status="pending", next_attempt_at=now, delivered_at=None, updated_at=now)
    )


async def delivery_counts(conn: AsyncConnection) -> dict[str, int]:
    query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
    return {str(status): int(count) for status, count in (await conn.execute(query)).all()}
