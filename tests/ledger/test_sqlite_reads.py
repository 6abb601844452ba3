"""The batch kernel's reads by sqlite3 (ledger/repository/sqlite_reads.py) answer what
the same statements answer through SQLAlchemy: the same rows, the same values (text
turned into datetimes), for any number of values, inside a writing transaction."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ManualClock, TokenService
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.ledger.repository import batch_holds, writes
from tokenbank.ledger.repository.sqlite_reads import select_now
from tokenbank.ledger.repository.tables import holds, idempotency_keys, wallets

USERS = [f"user-{n}" for n in range(5)]


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "tokenbank.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    clock = ManualClock()
    async with TokenService(sqlite_url, clock=clock, welcome_bonus_tokens=0) as tokens:
        for number, user in enumerate(USERS):
            await tokens.open_wallet(user)
            await tokens.credit(user, amount=100 + number, operation_type="purchase")
            expiry = clock() + timedelta(days=number + 1)
            await tokens.credit(user, amount=50, operation_type="bonus", expires_at=expiry)
        await tokens.hold(USERS[0], amount=30, idempotency_key="hold-a")
        await tokens.debit(USERS[1], amount=5, idempotency_key="debit-b")
        yield await tokens.engine()


def _plain(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("count", [1, 2, 5])
async def test_the_wallets_with_their_grants(engine: AsyncEngine, count: int) -> None:
    users = [*USERS[:count], "nobody"]
    async with write_transaction(engine) as conn:
        direct = await select_now(conn, writes._LOCK_WITH_GRANTS, "user_ids", users)
        through = await conn.execute(writes._LOCK_WITH_GRANTS, {"user_ids": users})
    assert _plain(direct) == _plain(through)
    assert len({row.id for row in direct}) == count
    assert all(row.grant_expires_at is None or row.grant_expires_at.tzinfo for row in direct)
    assert any(row.grant_expires_at is not None for row in direct)


async def test_the_keys_and_the_holds(engine: AsyncEngine) -> None:
    keys = [("app:default", "debit-b"), ("app:default", "hold-a"), ("app:default", "none")]
    async with read_transaction(engine) as conn:
        hold_ids = [row.id for row in await conn.execute(select(holds.c.id))]
        scopes = await conn.execute(select(idempotency_keys.c.scope).distinct())
        scope = scopes.scalar_one()
    keys = [(scope, key) for _, key in keys]
    async with write_transaction(engine) as conn:
        registered = await writes.registered_keys(conn, keys)
        through = await conn.execute(writes._registered_keys(keys))
        held = await batch_holds.lock_holds(conn, [*hold_ids, "missing"])
        held_through = await conn.execute(
            batch_holds._LOCK_HOLDS, {"hold_ids": [*hold_ids, "missing"]}
        )
    assert sorted(_plain(registered.values())) == sorted(_plain(through))
    assert set(registered) == set(keys[:2])
    assert registered[keys[1]].id is None  # a hold leaves a key and no transaction
    assert registered[keys[0]].balance_after == 146
    assert _plain(held.values()) == _plain(held_through)
    assert held[hold_ids[0]].expires_at.tzinfo is not None


async def test_no_values_read_nothing_and_other_parameters_are_refused(
    engine: AsyncEngine,
) -> None:
    with_two = select(wallets.c.id).where(
        wallets.c.user_id.in_(bindparam("ids", expanding=True)), wallets.c.status == "active"
    )
    async with write_transaction(engine) as conn:
        assert await select_now(conn, writes._LOCK_WITH_GRANTS, "user_ids", []) == []
        with pytest.raises(ValueError, match="other parameters"):
            await select_now(conn, with_two, "ids", ["user-0"])


async def test_only_inside_a_writing_transaction(engine: AsyncEngine) -> None:
    async with read_transaction(engine) as conn:
        with pytest.raises(RuntimeError, match="outside BEGIN IMMEDIATE"):
            await select_now(conn, writes._LOCK_WITH_GRANTS, "user_ids", ["user-0"])
