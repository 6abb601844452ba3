"""SQLite's writers take turns (db/write_queue.py): a writing transaction holds the
database's turn, a flock beside the file, from before BEGIN IMMEDIATE until it ends;
another process holding it makes a writer wait, then go the moment it is released;
and a writer that gives up after the busy timeout leaves nothing locked behind."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.config import Settings
from tokenbank.db.engine import create_engine, write_transaction
from tokenbank.db.write_queue import LOCK_FILE_SUFFIX

BUSY_TIMEOUT_MS = 400
# Far more than starting Python and giving up after the busy timeout take.
EXITS_WITHIN_S = 30.0
GIVES_UP = """
import asyncio, sys
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine, write_transaction

async def main() -> None:
    engine = create_engine(sys.argv[1], Settings(sqlite_busy_timeout_ms=300))
    try:
        async with write_transaction(engine) as conn:
            await conn.execute(text("INSERT INTO t VALUES (5)"))
    except OperationalError as error:
        print(error.orig, flush=True)
    await engine.dispose()

asyncio.run(main())
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    settings = Settings(sqlite_busy_timeout_ms=BUSY_TIMEOUT_MS)
    engine = create_engine(f"sqlite:///{tmp_path / 'bank.db'}", settings)
    async with write_transaction(engine) as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine
    await engine.dispose()


def _lock_path(tmp_path: Path) -> str:
    return str((tmp_path / "bank.db").resolve()) + LOCK_FILE_SUFFIX


def _is_locked(path: str) -> bool:
    """Whether someone holds the turn: a flock of our own open file says."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # EWOULDBLOCK: someone has it
        return True
    finally:
        os.close(fd)  # closing releases it
    return False


@contextmanager
def another_process_writing(path: str) -> Iterator[int]:
    """The turn as another process would hold it (its own open file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        os.close(fd)


async def test_a_write_transaction_holds_the_turn_until_it_ends(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = _lock_path(tmp_path)
    assert not _is_locked(path)
    async with write_transaction(engine) as conn:
        await conn.execute(text("INSERT INTO t VALUES (1)"))
        assert _is_locked(path)
    assert not _is_locked(path)
    seen_locked: list[bool] = []

    async def fail_inside() -> None:
        async with write_transaction(engine):
            seen_locked.append(_is_locked(path))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await fail_inside()
    assert seen_locked == [True]
    assert not _is_locked(path)


async def test_a_writer_waits_for_another_process_and_goes_when_it_lets_go(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = _lock_path(tmp_path)
    released_at = 0.0

    async def write() -> float:
        async with write_transaction(engine) as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))
        return time.perf_counter()

    with another_process_writing(path) as fd:
        writer = asyncio.create_task(write())
        await asyncio.sleep(BUSY_TIMEOUT_MS / 1000 / 4)
        assert not writer.done()  # waiting its turn
        fcntl.flock(fd, fcntl.LOCK_UN)
        released_at = time.perf_counter()
        committed_at = await writer
    # Handed over by the kernel, not found by a busy handler's next try (up to
    # 100 ms apart): well under that, even on a loaded machine.
    assert committed_at - released_at < 0.05
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1


async def test_a_writer_that_waited_too_long_gets_database_is_locked_and_leaves_no_lock(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = _lock_path(tmp_path)
    with another_process_writing(path):
        started = time.perf_counter()
        with pytest.raises(OperationalError, match="database is locked"):
            async with write_transaction(engine) as conn:
                await conn.execute(text("INSERT INTO t VALUES (3)"))
        waited = time.perf_counter() - started
    assert BUSY_TIMEOUT_MS / 1000 <= waited < BUSY_TIMEOUT_MS / 1000 + 1.0
    # The thread that was still waiting took the lock when the other process let go,
    # and let go of it at once: the next writer goes straight in.
    await asyncio.sleep(0.05)
    assert not _is_locked(path)
    async with write_transaction(engine) as conn:
        await conn.execute(text("INSERT INTO t VALUES (4)"))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT n FROM t"))).scalars().all() == [4]


async def test_writers_of_one_process_take_turns(engine: AsyncEngine) -> None:
    inside: list[int] = []
    most_inside = 0

    async def write(n: int) -> None:
        nonlocal most_inside
        async with write_transaction(engine) as conn:
            inside.append(n)
            most_inside = max(most_inside, len(inside))
            await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.01)  # hold the turn across an await
            inside.remove(n)

    await asyncio.gather(*(write(n) for n in range(8)))
    assert most_inside == 1
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all()
    assert rows == list(range(8))


async def test_a_process_that_gave_up_waiting_can_exit(engine: AsyncEngine, tmp_path: Path) -> None:
    """Its waiting thread is still in flock while the other process holds the turn:
    a thread the interpreter joins at exit (an executor's) would keep it from exiting
    until then."""
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    with another_process_writing(_lock_path(tmp_path)):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", GIVES_UP, url, stdout=asyncio.subprocess.PIPE
        )
        try:
            said, _ = await asyncio.wait_for(process.communicate(), EXITS_WITHIN_S)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert said.decode().strip() == "database is locked"
    assert process.returncode == 0
