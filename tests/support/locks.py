"""Waiting for a transaction to be stuck on a row lock (PostgreSQL), for tests that
make a race happen in a known order."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

POLL_S = 0.05


async def someone_waits_on_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return int((await conn.execute(query)).scalar_one()) > 0


async def until_someone_waits(engine: AsyncEngine, *, at_most_s: float) -> bool:
    """Whether a backend came to wait on a lock within ``at_most_s``."""
    for _ in range(int(at_most_s / POLL_S)):
        await asyncio.sleep(POLL_S)
        if await someone_waits_on_a_lock(engine):
            return True
    return False
