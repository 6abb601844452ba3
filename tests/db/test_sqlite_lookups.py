"""Reads that only look (the sweeps' search for due wallets, the health check) do not
take SQLite's write lock.

A connection that runs a statement outside ``read_transaction`` or
``write_transaction`` begins ``BEGIN IMMEDIATE`` (db/engine.py): it would take the
database's one write lock without the write turn, so a sweep that found nothing to
do would still make every writer wait behind it, and a health check would wait for
(and report 503 on) a long write by another program. Here another program holds the
lock for the whole test: each lookup must answer at once all the same.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.config import Settings

# Far below the busy timeout (30 s) a lookup would wait for the lock.
ANSWER_AT_ONCE_S = 1.0


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "tokenbank.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def service(sqlite_url: str) -> AsyncIterator[TokenService]:
    async with TokenService(sqlite_url, clock=ManualClock(), auto_migrate=False) as tokens:
        await tokens.engine()  # started (and its pool's first connection opened) now
        yield tokens


@contextmanager
def another_program_writing(sqlite_url: str) -> Iterator[None]:
    """Another program holds SQLite's write lock meanwhile."""
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.rollback()
        other.close()


async def test_the_sweeps_look_for_due_wallets_without_the_lock(
    service: TokenService, sqlite_url: str
) -> None:
    started = time.monotonic()
    with another_program_writing(sqlite_url):
        assert await service.expire_grants() == 0
        assert await service.apply_scheduled_credits() == 0
    assert time.monotonic() - started < ANSWER_AT_ONCE_S


async def test_the_health_check_does_not_wait_for_the_lock(
    service: TokenService, sqlite_url: str
) -> None:
    app = create_app(Settings(), token_service=service)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test") as client,
    ):
        with another_program_writing(sqlite_url):
            started = time.monotonic()
            answer = await client.get("/healthz")
    assert answer.json() == {"status": "ok", "database": "ok"}
    assert time.monotonic() - started < ANSWER_AT_ONCE_S
