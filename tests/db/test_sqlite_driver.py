"""SQLite's connections run each statement in one hop to their thread
(db/sqlite_driver.py), and still answer as a DB-API cursor does: the rows of a
SELECT, the rowcount of an UPDATE, the ids of a RETURNING, errors as SQLAlchemy's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.config import Settings
from tokenbank.db.engine import create_engine, read_transaction, write_transaction
from tokenbank.db.sqlite_driver import OneHopConnection


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'bank.db'}", Settings())
    async with write_transaction(engine) as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER UNIQUE)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """Every function the connections send to their threads, in order."""
    sent: list[Callable[..., Any]] = []
    original = OneHopConnection._execute

    async def counted(self: OneHopConnection, fn: Callable[..., Any], *args: Any) -> Any:
        sent.append(fn)
        return await original(self, fn, *args)

    monkeypatch.setattr(OneHopConnection, "_execute", counted)
    return sent


async def test_a_statement_is_one_hop(engine: AsyncEngine, hops: list[Any]) -> None:
    async with write_transaction(engine) as conn:
        hops.clear()  # past BEGIN IMMEDIATE
        await conn.execute(text("INSERT INTO t (n) VALUES (1), (2), (3)"))
        rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).all()
        assert len(hops) == 2  # aiosqlite's cursor took four: open, execute, fetch, close
    assert [row.n for row in rows] == [1, 2, 3]


async def test_rowcounts_ids_and_rows(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as conn:
        numbers = [{"n": n} for n in range(5)]
        inserted = await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), numbers)
        assert inserted.rowcount == 5  # executemany
        result = await conn.execute(text("INSERT INTO t (n) VALUES (10) RETURNING id, n"))
        assert [tuple(row) for row in result] == [(6, 10)]
        updated = await conn.execute(text("UPDATE t SET n = n + 100 WHERE n < 3"))
        assert updated.rowcount == 3
    async with read_transaction(engine) as conn:
        result = await conn.execute(text("SELECT n FROM t ORDER BY n"))
        assert result.fetchone() == (3,)
        assert result.fetchmany(2) == [(4,), (10,)]
        assert result.fetchall() == [(100,), (101,), (102,)]


async def test_errors_reach_sqlalchemy_and_roll_back(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
    with pytest.raises(IntegrityError):
        await _insert_twice(engine)
    async with read_transaction(engine) as conn:
        assert (await conn.execute(text("SELECT n FROM t"))).scalars().all() == [2]


async def _insert_twice(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
        await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
