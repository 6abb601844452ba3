"""The hot reads' pool (db/read_pool.py) on a real PostgreSQL: it never opens more
connections than its size, hands them to waiting reads in turn, gives up on a wait
after its timeout with the error every unreachable database gets, and a read
cancelled mid-statement leaves its place to the next read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError

from tokenbank.db.read_pool import ReadPool
from tokenbank.testing.postgres import PostgresServer

SLEEP = "SELECT pg_sleep($1::float), pg_backend_pid() AS pid"


@pytest.fixture
def connect_kwargs(postgres_server: PostgresServer) -> dict[str, Any]:
    # Its own name per test: a cancelled read's backend may outlive its test.
    application = f"read-pool-{uuid.uuid4().hex[:8]}"
    return {
        "host": postgres_server.host,
        "port": postgres_server.port,
        "user": postgres_server.user,
        "database": "postgres",
        "server_settings": {"application_name": application},
    }


@pytest.fixture
async def pool(connect_kwargs: dict[str, Any]) -> AsyncIterator[ReadPool]:
    read_pool = ReadPool(connect_kwargs, max_size=2, timeout_seconds=5)
    yield read_pool
    await read_pool.close()


async def _backends(connect_kwargs: dict[str, Any]) -> int:
    application = connect_kwargs["server_settings"]["application_name"]
    observer = await asyncpg.connect(**{**connect_kwargs, "server_settings": {}})
    try:
        found = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
        )
        return int(found)
    finally:
        await observer.close()


async def test_reads_past_the_size_wait_their_turn_on_the_same_connections(
    pool: ReadPool, connect_kwargs: dict[str, Any]
) -> None:
    rows = await asyncio.gather(*(pool.fetch(SLEEP, [0.02]) for _ in range(12)))
    pids = {row[0].pid for row in rows}
    assert len(pids) == 2  # twelve reads, two connections
    assert await _backends(connect_kwargs) == 2
    # An idle connection is handed out again, not a new one opened.
    assert (await pool.fetch(SLEEP, [0]))[0].pid in pids


async def test_a_wait_past_the_timeout_is_the_unreachable_databases_error(
    connect_kwargs: dict[str, Any],
) -> None:
    pool = ReadPool(connect_kwargs, max_size=1, timeout_seconds=0.2)
    try:
        slow = asyncio.create_task(pool.fetch(SLEEP, [1.0]))
        await asyncio.sleep(0.1)  # the slow read holds the only connection
        with pytest.raises(OperationalError):
            await pool.fetch(SLEEP, [0])
        await slow
        # The timed-out wait left nothing behind: the next read gets the connection.
        assert (await pool.fetch(SLEEP, [0]))[0].pid == (await slow)[0].pid
    finally:
        await pool.close()


async def test_a_read_cancelled_mid_statement_frees_its_place(
    connect_kwargs: dict[str, Any],
) -> None:
    pool = ReadPool(connect_kwargs, max_size=1, timeout_seconds=5)
    try:
        cancelled = asyncio.create_task(pool.fetch(SLEEP, [5.0]))
        waiting = asyncio.create_task(pool.fetch(SLEEP, [0]))
        await asyncio.sleep(0.2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # The waiting read opens a new connection in the freed place, well before the
        # cancelled statement would have ended.
        row = (await asyncio.wait_for(waiting, timeout=2))[0]
        assert row.pid is not None
    finally:
        await pool.close()


async def test_close_ends_every_connection(pool: ReadPool, connect_kwargs: dict[str, Any]) -> None:
    await asyncio.gather(pool.fetch(SLEEP, [0.05]), pool.fetch(SLEEP, [0.05]))
    assert await _backends(connect_kwargs) == 2
    await pool.close()
    for _ in range(50):  # the server notices the closed sockets promptly
        if await _backends(connect_kwargs) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _backends(connect_kwargs) == 0
    with pytest.raises(OperationalError):
        await pool.fetch(SLEEP, [0])
