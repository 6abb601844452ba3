"""Rows written with the Python layer bypassed: each refusal next to a row accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import TokenService
from tokenbank.db.engine import write_transaction


async def engine_with_ann(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database with one wallet, ann's (for a fixture to yield from)."""
    async with TokenService(database_url, welcome_bonus_tokens=0, auto_migrate=False) as bank:
        await bank.open_wallet("ann")
        yield await bank.engine()


async def accepted(engine: AsyncEngine, table: Any, row: dict[str, Any]) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(insert(table).values(row))


async def refused(engine: AsyncEngine, table: Any, row: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(insert(table).values(row))
