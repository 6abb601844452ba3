"""SQL over accounts, web sessions, sign-in attempts and the admin audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import Account, AdminAuditEntry, SignInAttempts, WebSession
from tokenbank.db.rows import AnyRow

accounts = cast(Table, Account.__table__)
sessions = cast(Table, WebSession.__table__)
attempts = cast(Table, SignInAttempts.__table__)
audit_log = cast(Table, AdminAuditEntry.__table__)


async def account_by_email(conn: AsyncConnection, email: str) -> AnyRow | None:
    return (await conn.execute(select(accounts).where(accounts.c.email == email))).first()


async def account_by_id(conn: AsyncConnection, account_id: int) -> AnyRow | None:
    return (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()


async def insert_account(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(insert(accounts).values(**values).returning(accounts.c.id))
    return int(result.scalar_one())


async def update_account(conn: AsyncConnection, account_id: int, values: dict[str, Any]) -> bool:
    statement = update(accounts).where(accounts.c.id == account_id).values(**values)
    return bool((await conn.execute(statement)).rowcount)


async def account_rows(
    conn: AsyncConnection, *, search: str | None, limit: int, offset: int
) -> list[AnyRow]:
    query = select(accounts).order_by(accounts.c.email)
    if search:
        query = query.where(accounts.c.email.contains(search.lower(), autoescape=True))
    return list((await conn.execute(query.limit(limit).offset(offset))).all())


# --- sessions --------------------------------------------------------------------------------


async def insert_session(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(sessions).values(**values))


async def live_session(conn: AsyncConnection, token_hash: str, now: datetime) -> AnyRow | None:
    """A session that is neither revoked nor expired, with its account."""
    query = (
        select(sessions, accounts.c.email, accounts.c.role, accounts.c.user_id)
        .join(accounts, accounts.c.id == sessions.c.account_id)
        .where(
            sessions.c.token_hash == token_hash,
            sessions.c.revoked_at.is_(None),
            sessions.c.expires_at > now,
        )
    )
    return (await conn.execute(query)).first()


async def revoke_session(conn: AsyncConnection, token_hash: str, now: datetime) -> None:
    await conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == token_hash, sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_sessions_of(conn: AsyncConnection, account_id: int, now: datetime) -> int:
    result = await conn.execute(
        update(sessions)
        .where(sessions.c.account_id == account_id, sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


# --- sign-in attempts ------------------------------------------------------------------------


async def attempts_row(conn: AsyncConnection, email_hash: str) -> AnyRow | None:
    query = select(attempts).where(attempts.c.email_hash == email_hash)
    return (await conn.execute(query)).first()


async def save_attempts(conn: AsyncConnection, values: dict[str, Any]) -> None:
    if await attempts_row(conn, values["email_hash"]) is None:
        await conn.execute(insert(attempts).values(**values))
        return
    await conn.execute(
        update(attempts).where(attempts.c.email_hash == values["email_hash"]).values(**values)
    )


async def clear_attempts(conn: AsyncConnection, email_hash: str) -> None:
    await conn.execute(attempts.delete().where(attempts.c.email_hash == email_hash))


# --- the admin audit log ---------------------------------------------------------------------


async def insert_audit(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(audit_log).values(**values))


async def audit_rows(conn: AsyncConnection, *, limit: int, offset: int) -> list[AnyRow]:
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
    return list((await conn.execute(query)).all())
