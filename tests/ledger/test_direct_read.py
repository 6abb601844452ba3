"""The balance read on PostgreSQL goes to asyncpg directly (tokenbank.db.direct).

It must answer what SQLAlchemy's path answers, send nothing through SQLAlchemy's
execution (else the speed it exists for is silently gone), and fall back to
SQLAlchemy inside a transaction. The retry on a closed connection is checked in
tests/security/test_database_faults.py (the very next read after
``pg_terminate_backend`` succeeds).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.direct import driver_fetch
from tokenbank.db.engine import create_engine, read_pool, read_transaction, write_transaction
from tokenbank.ledger.repository import reads
from tokenbank.plans.service import PlanService


async def test_the_balance_read_matches_sqlalchemys_and_skips_it(
    service: TokenService, clock: ManualClock, engine_name: str
) -> None:
    await service.open_wallet("alice")
    await service.credit("alice", amount=70, operation_type="purchase")
    await service.credit(
        "alice", amount=30, operation_type="bonus", expires_at=clock() + timedelta(days=3)
    )
    await service.debit("alice", amount=5)
    engine = await service.engine()
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        direct = await service.get_balance("alice")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    async with write_transaction(engine) as conn:  # inside a transaction: SQLAlchemy's
        through_sqlalchemy = await reads.balance(conn, "alice")
    async with read_transaction(engine) as conn:
        assert await reads.balance(conn, "nobody") is None
    assert direct == through_sqlalchemy
    assert direct is not None
    assert (direct.tokens_balance, direct.paid_tokens, direct.promotional_tokens) == (95, 70, 25)
    assert direct.next_expiry_at == clock() + timedelta(days=3)
    assert direct.next_expiry_at is not None and direct.next_expiry_at.utcoffset() == timedelta(0)
    # SQLite reads through SQLAlchemy (BEGIN, SELECT); PostgreSQL sends nothing through it.
    assert len(statements) == (2 if engine_name == "sqlite" else 0), statements


async def test_the_token_process_access_read_matches_sqlalchemys_and_skips_it(
    service: TokenService, engine_name: str
) -> None:
    """The token process's access read (wallet, plan, feature, membership) is one
    statement, direct on PostgreSQL; its rule comes back as JSON text either way."""
    await service.open_wallet("bea")
    await service.credit("bea", amount=40, operation_type="purchase")
    engine = await service.engine()
    plans = PlanService(engine)
    rule = {"type": "fixed", "tokens": 3}
    await plans.create_feature("chat", name="Chat", rule=rule, hold_tokens=5)
    await plans.create_plan("pro", profit_percent=10, features=["chat"])
    await plans.set_user_plan("bea", "pro")
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        direct = await plans.access("bea", "chat")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    async with write_transaction(engine) as conn:  # inside a transaction: SQLAlchemy's
        row = await reads.access_row(conn, "bea", "chat")
    assert (row.user_id, row.plan, row.id, bool(row.in_plan)) == ("bea", "pro", "chat", True)
    assert json.loads(row.pricing_rule_json) == rule
    assert direct.in_plan and direct.wallet is not None and direct.feature is not None
    assert (direct.wallet.balance_tokens, direct.feature.hold_tokens) == (40, 5)
    assert str(direct.wallet.plan_profit_percent) == "10"
    # SQLite reads through SQLAlchemy (BEGIN, SELECT); PostgreSQL sends nothing through it.
    assert len(statements) == (2 if engine_name == "sqlite" else 0), statements
    async with read_transaction(engine) as conn:
        nobody = await reads.access_row(conn, "nobody", "nothing")
    assert (nobody.user_id, nobody.id, bool(nobody.in_plan)) == (None, None, False)
    outsider = await plans.access("bea", "missing")
    assert outsider.feature is None and not outsider.in_plan and outsider.wallet is not None


async def test_the_hot_reads_pool_closes_with_its_engine(database_url: str) -> None:
    """The asyncpg pool of the hot reads (db/read_pool.py) opens connections when reads
    need them and closes them when its engine is disposed: none is left behind."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite reads through SQLAlchemy: there is no second pool")
    async with TokenService(database_url, settings=Settings(), auto_migrate=False) as service:
        engine = await service.engine()
        await service.open_wallet("cyd")
        await asyncio.gather(*(service.get_balance("cyd") for _ in range(4)))
        pool = read_pool(engine)
        assert pool is not None
        assert await _backends(engine) >= 2  # SQLAlchemy's and the read pool's
    # The service disposed its engine: a fresh engine sees only itself.
    observer = create_engine(database_url, Settings())
    try:
        assert await _backends(observer) == 1
    finally:
        await observer.dispose()


async def _backends(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
        )
        return int((await conn.execute(query)).scalar_one())


async def test_a_driver_statement_runs_only_inside_a_begun_transaction(database_url: str) -> None:
    """db.direct.driver_fetch (the kernel's writes on PostgreSQL) refuses to run before
    SQLAlchemy has begun the transaction (it would commit on its own), and a refused
    row comes out as SQLAlchemy's IntegrityError, which the writer's fallback catches."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's kernel writes through sqlite3 itself")
    engine = create_engine(database_url, Settings())
    try:
        async with engine.connect() as conn:
            with pytest.raises(RuntimeError, match="inside a transaction"):
                await driver_fetch(conn, "SELECT 1", [])
        async with write_transaction(engine) as conn:
            await conn.execute(text("CREATE TEMP TABLE once (n integer PRIMARY KEY)"))
            assert await driver_fetch(conn, "INSERT INTO once VALUES ($1) RETURNING n", [1])
            with pytest.raises(IntegrityError):
                await driver_fetch(conn, "INSERT INTO once VALUES ($1)", [1])
            await conn.rollback()
    finally:
        await engine.dispose()
