"""The batch kernel's writes on SQLite go to sqlite3 directly (batch_sqlite): a row
the database refuses still reaches the writer as SQLAlchemy's IntegrityError (its
cue to apply the batch one operation at a time) and leaves nothing written; and
that path runs only inside a writing transaction."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.config import Settings
from tokenbank.db.engine import create_engine, read_transaction, write_transaction
from tokenbank.db.sqlite_driver import OneHopConnection
from tokenbank.ledger.repository import batch_sqlite
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.repository.tables import idempotency_keys

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
async def engine(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    path = tmp_path / "bank.db"
    shutil.copyfile(sqlite_template, path)
    engine = create_engine(f"sqlite:///{path}", Settings())
    yield engine
    await engine.dispose()


def _key(key: str) -> dict[str, Any]:
    return {
        "scope": "app",
        "key": key,
        "request_hash": "h",
        "operation": "debit",
        "created_at": NOW,
    }


async def _write_keys(engine: AsyncEngine, keys: list[dict[str, Any]]) -> None:
    async with write_transaction(engine) as conn:
        await batch_sqlite.write_batch(
            conn,
            changes=[],
            legs=[],
            grants=[],
            grant_deltas=[],
            movements=[],
            headers=[],
            key_rows=keys,
            placed_holds=[],
            captured_holds=[],
            now=NOW,
        )


async def _keys(engine: AsyncEngine) -> list[str]:
    async with read_transaction(engine) as conn:
        rows = await conn.execute(select(idempotency_keys.c.key).order_by(idempotency_keys.c.key))
        return [row.key for row in rows]


async def test_a_refused_row_is_sqlalchemys_integrity_error(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as conn:
        await repo.record_keys(conn, [_key("taken")])
    with pytest.raises(IntegrityError):
        await _write_keys(engine, [_key("new"), _key("taken")])
    assert await _keys(engine) == ["taken"]  # "new" rolled back with the batch
    await _write_keys(engine, [_key("new")])
    assert await _keys(engine) == ["new", "taken"]


async def test_runs_only_inside_a_writing_transaction(engine: AsyncEngine) -> None:
    async with read_transaction(engine) as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, OneHopConnection)
        with pytest.raises(RuntimeError, match="outside BEGIN IMMEDIATE"):
            driver.run_writing(lambda sqlite: sqlite.execute("SELECT 1"))
