"""SQL for apps and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import is_sqlite
from tokenbank.db.models import ApiKey, ApiKeyRequestCount, App, AppOrigin
from tokenbank.db.rows import AnyRow

apps = cast(Table, App.__table__)
api_keys = cast(Table, ApiKey.__table__)
origins = cast(Table, AppOrigin.__table__)
request_counts = cast(Table, ApiKeyRequestCount.__table__)


async def app_by_slug(conn: AsyncConnection, slug: str) -> AnyRow | None:
    return (await conn.execute(select(apps).where(apps.c.slug == slug))).first()


async def insert_app(conn: AsyncConnection, slug: str, name: str | None, now: datetime) -> int:
    statement = insert(apps).values(slug=slug, name=name, created_at=now).returning(apps.c.id)
    return int((await conn.execute(statement)).scalar_one())


async def insert_key(
    conn: AsyncConnection,
    *,
    app_id: int,
    key_hash: str,
    display_prefix: str,
    scopes: str,
    now: datetime,
    limits: dict[str, int | None] | None = None,
) -> int:
    statement = (
        insert(api_keys)
        .values(
            app_id=app_id,
            key_hash=key_hash,
            display_prefix=display_prefix,
            scopes=scopes,
            created_at=now,
            **(limits or {}),
        )
        .returning(api_keys.c.id)
    )
    return int((await conn.execute(statement)).scalar_one())


async def key_by_hash(conn: AsyncConnection, key_hash: str) -> AnyRow | None:
    statement = (
        select(api_keys, apps.c.slug)
        .join(apps, apps.c.id == api_keys.c.app_id)
        .where(api_keys.c.key_hash == key_hash)
    )
    return (await conn.execute(statement)).first()


async def live_keys(conn: AsyncConnection, app_id: int, now: datetime) -> list[AnyRow]:
    statement = select(api_keys).where(
        api_keys.c.app_id == app_id,
        api_keys.c.revoked_at.is_(None),
        or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
    )
    return list((await conn.execute(statement.order_by(api_keys.c.id))).all())


async def expire_keys(conn: AsyncConnection, key_ids: list[int], expires_at: datetime) -> None:
    statement = (
        update(api_keys)
        .where(api_keys.c.id.in_(key_ids), api_keys.c.revoked_at.is_(None))
        .values(expires_at=expires_at)
    )
    await conn.execute(statement)


async def revoke_keys(conn: AsyncConnection, key_ids: list[int], now: datetime) -> int:
    statement = (
        update(api_keys)
        .where(api_keys.c.id.in_(key_ids), api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return (await conn.execute(statement)).rowcount


async def list_apps(conn: AsyncConnection) -> list[AnyRow]:
    statement = select(apps).order_by(apps.c.slug)
    return list((await conn.execute(statement)).all())


async def keys_of(conn: AsyncConnection, app_id: int) -> list[AnyRow]:
    statement = select(api_keys).where(api_keys.c.app_id == app_id).order_by(api_keys.c.id)
    return list((await conn.execute(statement)).all())


async def add_origin(conn: AsyncConnection, app_id: int, origin: str, now: datetime) -> bool:
    if await origin_registered(conn, origin, app_id=app_id):
        return False
    await conn.execute(insert(origins).values(app_id=app_id, origin=origin, created_at=now))
    return True


async def remove_origin(conn: AsyncConnection, app_id: int, origin: str) -> bool:
    statement = origins.delete().where(origins.c.app_id == app_id, origins.c.origin == origin)
    return bool((await conn.execute(statement)).rowcount)


async def origin_registered(
    conn: AsyncConnection, origin: str, *, app_id: int | None = None
) -> bool:
    query = select(origins.c.origin).where(origins.c.origin == origin)
    if app_id is not None:
        query = query.where(origins.c.app_id == app_id)
    return (await conn.execute(query.limit(1))).first() is not None


async def origins_of(conn: AsyncConnection, app_id: int) -> list[str]:
    query = select(origins.c.origin).where(origins.c.app_id == app_id).order_by(origins.c.origin)
    return list((await conn.execute(query)).scalars())


# --- per-key limits (issue 14) ---------------------------------------------------------------


async def set_key_limits(conn: AsyncConnection, key_id: int, limits: dict[str, int | None]) -> None:
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**limits))


async def claim_requests(
    conn: AsyncConnection, *, key_id: int, window_start: datetime, requests: int
) -> int:
    """Add ``requests`` to the key's claims in the window, atomically; the claims after.

    One statement on both engines (an upsert that adds under the row's lock), so
    concurrent claims from any number of processes get disjoint ranges of the count.
    """
    insert_into = sqlite.insert if is_sqlite(conn) else postgresql.insert
    statement = insert_into(request_counts).values(
        key_id=key_id, window_start=window_start, claimed_requests=requests
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[request_counts.c.key_id, request_counts.c.window_start],
        set_={
            "claimed_requests": request_counts.c.claimed_requests
            + statement.excluded.claimed_requests
        },
    ).returning(request_counts.c.claimed_requests)
    return int((await conn.execute(upsert)).scalar_one())


async def forget_windows_before(
    conn: AsyncConnection, *, key_id: int, window_start: datetime
) -> None:
    """Past windows decide nothing: their counts go when a new window starts."""
    await conn.execute(
        delete(request_counts).where(
            request_counts.c.key_id == key_id, request_counts.c.window_start < window_start
        )
    )
