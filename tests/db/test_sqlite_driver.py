"""SQLite's connections (db/sqlite_driver.py) run a statement in one hop to their
thread, and a writing transaction's statements (BEGIN IMMEDIATE when the lock is
free, through COMMIT) on the caller's thread; either way they answer as a DB-API
cursor does: the rows of a SELECT, the rowcount of an UPDATE, the ids of a
RETURNING, errors as SQLAlchemy's."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.config import Settings
from tokenbank.db.engine import create_engine, read_transaction, write_transaction, write_turn
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

    async def counted(
        self: OneHopConnection, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        sent.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(OneHopConnection, "_execute", counted)
    return sent


async def test_a_read_is_one_hop_per_statement(engine: AsyncEngine, hops: list[Any]) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(text("INSERT INTO t (n) VALUES (1), (2), (3)"))
    async with read_transaction(engine) as conn:  # a pooled connection: no hop to open
        hops.clear()
        rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).all()
        assert len(hops) == 1  # aiosqlite's cursor took four: open, execute, fetch, close
    # BEGIN, COMMIT and the pool's rollback on return took one each.
    assert len(hops) == 1
    assert [row.n for row in rows] == [1, 2, 3]


async def test_a_writing_transaction_makes_no_hop(engine: AsyncEngine, hops: list[Any]) -> None:
    async with engine.connect() as conn:
        hops.clear()  # past the checkout
        async with write_turn(engine), conn.begin():
            await conn.execute(text("INSERT INTO t (n) VALUES (1), (2), (3)"))
            rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).all()
        assert hops == []  # each hop waits for the event loop, holding the write lock
    assert [row.n for row in rows] == [1, 2, 3]
    async with read_transaction(engine) as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3


async def test_a_writer_waits_for_another_programs_lock_in_its_thread(
    engine: AsyncEngine, tmp_path: Path, hops: list[Any]
) -> None:
    """Another program (no write turn) holds SQLite's lock: BEGIN IMMEDIATE waits for
    it in the connection's thread, up to the busy timeout, not on the event loop."""
    other = sqlite3.connect(tmp_path / "bank.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.2, other.rollback)
    started = time.monotonic()
    async with engine.connect() as conn:
        hops.clear()
        async with write_turn(engine), conn.begin():
            await conn.execute(text("INSERT INTO t (n) VALUES (7)"))
    other.close()
    assert time.monotonic() - started >= 0.2
    assert [getattr(fn, "__name__", fn) for fn in hops] == ["execute"]  # the wait


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


async def test_a_streamed_read_comes_in_parts(engine: AsyncEngine) -> None:
    """SQLAlchemy's server-side cursor (``stream``) fetches one row, then some."""
    async with write_transaction(engine) as conn:
        await conn.execute(text("INSERT INTO t (n) VALUES (1), (2), (3), (4)"))
    async with read_transaction(engine) as conn:
        result = await conn.stream(text("SELECT n FROM t ORDER BY n"))
        assert (await result.fetchone()) == (1,)
        assert list(await result.fetchmany(2)) == [(2,), (3,)]
        assert [tuple(row) async for row in result] == [(4,)]
