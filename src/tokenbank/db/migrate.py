"""Run the Alembic migrations programmatically (``tokenbank db upgrade``).

Migrations may start at the same moment in several places: the workers of one
server, several replicas, two services in one process. Alembic keeps its
``context`` in process-wide globals, so one process migrates at a time (a lock
that never blocks the event loop); on PostgreSQL an advisory lock makes replicas
take turns, and a database already at head is left alone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_PATH = Path(__file__).parent / "migrations"
# An arbitrary constant that names tokenbank's migration lock in pg_locks.
MIGRATION_ADVISORY_LOCK_ID = 7_204_519_301
LOCK_POLL_SECONDS = 0.01

_process_lock = threading.Lock()


@asynccontextmanager
async def _one_migration_per_process() -> AsyncIterator[None]:
    # Polled rather than awaited in a thread: a waiter must not block its loop,
    # and a cancelled waiter must not leave the lock taken.
    while not _process_lock.acquire(blocking=False):  # noqa: ASYNC110 - a thread lock
        await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        _process_lock.release()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if revision == "head" and _current_revision(connection) == head_revision():
        return
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database up to ``revision`` in one transaction."""
    async with _one_migration_per_process(), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:lock_id)"),
                {"lock_id": MIGRATION_ADVISORY_LOCK_ID},
            )
        await connection.run_sync(_upgrade, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the database down to ``revision`` (``"base"``: no tables) in one transaction."""
    async with _one_migration_per_process(), engine.begin() as connection:
        await connection.run_sync(_downgrade, revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
