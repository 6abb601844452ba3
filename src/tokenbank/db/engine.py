"""Engines for SQLite (the embedded default) and PostgreSQL (production).

SQLite needs three things set on every connection to be a safe ledger store:
WAL (readers never block the writer), foreign keys on (off by default!), and
``BEGIN IMMEDIATE`` for writing transactions, so that two writers queue on the
database lock instead of both reading a balance and one failing at commit.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from tokenbank.config import Settings
from tokenbank.db.read_pool import ReadPool
from tokenbank.db.sqlite_driver import BEGIN_READING, BEGIN_WRITING, one_hop_connector
from tokenbank.db.write_queue import WriteQueue

READ_ONLY_OPTION = "tokenbank_read_only"
# Each SQLite engine's queue of writers (db/write_queue.py); gone with its engine.
_write_queues: weakref.WeakKeyDictionary[Engine, WriteQueue] = weakref.WeakKeyDictionary()
# Each PostgreSQL engine's pool for the hot reads (db/read_pool.py); closed with it.
_read_pools: weakref.WeakKeyDictionary[Engine, ReadPool] = weakref.WeakKeyDictionary()


def normalize_database_url(url: str) -> str:
    """Accept plain ``sqlite:///`` and ``postgresql://`` URLs and pick the async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _check_sqlite_path(parsed.database)
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL {parsed.drivername!r}: use sqlite or postgresql")


def _check_sqlite_path(database: str | None) -> None:
    """Refuse what would fail later, in the driver's thread, with a confusing error."""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise ValueError(
            "in-memory SQLite is not supported (each pooled connection would get its own"
            " database): use a file, e.g. sqlite:///./tokenbank.db"
        )
    directory = Path(database).expanduser().resolve().parent
    if not directory.is_dir():
        raise ValueError(f"the directory for the SQLite file does not exist: {directory}")


def is_sqlite(engine: AsyncEngine | AsyncConnection) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    url = normalize_database_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, settings)
    return _create_postgres_engine(url, settings)


def _create_postgres_engine(url: str, settings: Settings) -> AsyncEngine:
    server_settings = {
        "application_name": "tokenbank",
        "statement_timeout": str(settings.db_statement_timeout_ms),
    }
    connect_args = {
        "server_settings": server_settings,
        "timeout": settings.db_statement_timeout_ms / 1000,
    }
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_statement_timeout_ms / 1000,
        connect_args=connect_args,
    )
    ping_timeout_seconds = settings.db_statement_timeout_ms / 1000
    event.listen(
        engine.sync_engine.pool,
        "checkout",
        functools.partial(_ping_on_checkout, timeout_seconds=ping_timeout_seconds),
    )
    _add_read_pool(engine, connect_args, settings)
    return engine


def _add_read_pool(engine: AsyncEngine, connect_args: dict[str, Any], settings: Settings) -> None:
    """The hot reads' asyncpg pool, connecting as SQLAlchemy's connections do."""
    _args, url_kwargs = engine.dialect.create_connect_args(engine.url)
    pool = ReadPool(
        {**url_kwargs, **connect_args},
        max_size=max(2, settings.db_pool_size // 2),
        timeout_seconds=settings.db_statement_timeout_ms / 1000,
    )
    _read_pools[engine.sync_engine] = pool

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def on_dispose(_engine: Engine) -> None:
        # AsyncEngine.dispose runs this in its greenlet, where a coroutine may be awaited.
        await_(pool.close())


def read_pool(engine: AsyncEngine) -> ReadPool | None:
    """The engine's pool for the hot reads: PostgreSQL's; None on SQLite."""
    return _read_pools.get(engine.sync_engine)


def _ping_on_checkout(
    _dbapi_connection: Any, _record: Any, proxy: Any, *, timeout_seconds: float
) -> None:
    """Hand out no connection the server has closed; the pool replaces one that fails.

    ``pool_pre_ping`` does the same with three round trips on asyncpg (BEGIN, the
    ping, ROLLBACK: SQLAlchemy wraps it for pgbouncer), measured at 11% of a
    balance read's CPU. This is one: an empty statement outside any transaction.
    A connection the server ended while it sat in the pool (a restart, an idle
    timeout, ``pg_terminate_backend``) is known closed without asking at all.
    """
    driver_connection = proxy.driver_connection
    if driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")
    try:
        await_(driver_connection.fetchrow(";", timeout=timeout_seconds))
    except Exception as error:  # any failure: the pool tries a fresh connection
        raise DisconnectionError(f"pooled connection failed its ping: {error}") from error


def _create_sqlite_engine(url: str, settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.sqlite_busy_timeout_ms / 1000,
        async_creator=one_hop_connector(url, {"timeout": settings.sqlite_busy_timeout_ms / 1000}),
    )
    pragmas = (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={settings.sqlite_synchronous}",
        "PRAGMA foreign_keys=ON",
        # Without this, INSERT OR REPLACE deletes rows without firing DELETE
        # triggers, which would let an upsert rewrite append-only ledger rows.
        "PRAGMA recursive_triggers=ON",
        f"PRAGMA busy_timeout={settings.sqlite_busy_timeout_ms}",
    )

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module; we emit our own below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql(BEGIN_READING if read_only else BEGIN_WRITING)

    database = make_url(url).database
    if database is not None:  # always a file (_check_sqlite_path)
        _write_queues[engine.sync_engine] = WriteQueue(
            str(Path(database).expanduser().resolve()),
            timeout_seconds=settings.sqlite_busy_timeout_ms / 1000,
        )
    return engine


@asynccontextmanager
async def write_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    """On SQLite, the database's write turn (db/write_queue.py) for the block: take it
    before ``BEGIN IMMEDIATE`` and keep it until the transaction has ended. Nothing
    on PostgreSQL, whose writers lock rows, not the database."""
    queue = _write_queues.get(engine.sync_engine)
    if queue is None:
        yield
        return
    async with queue.turn():
        yield


@asynccontextmanager
async def read_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read that does not take SQLite's write lock.

    On SQLite, one snapshot for the whole block. On PostgreSQL, autocommit: under
    READ COMMITTED every statement takes its own snapshot anyway, so BEGIN and
    COMMIT would add two round trips and change nothing.
    """
    async with engine.connect() as connection:
        if is_sqlite(connection):
            await connection.execution_options(**{READ_ONLY_OPTION: True})
            async with connection.begin():
                yield connection
        else:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection


@asynccontextmanager
async def snapshot_read(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read of the whole database that must see one moment: `tokenbank audit`.

    On SQLite, read_transaction's snapshot. On PostgreSQL, one REPEATABLE READ,
    READ ONLY transaction, so that totals read by different statements agree while
    the service keeps writing; and no statement timeout inside it, because a read of
    every ledger row takes as long as the ledger is big (about a minute per
    10,000,000 entries), far past what a request may take.
    """
    if is_sqlite(engine):
        async with read_transaction(engine) as connection:
            yield connection
        return
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            await connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            yield connection


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A writing transaction: committed when the block ends, rolled back on error.

    On SQLite it waits for the write turn holding its connection, as it waited in
    BEGIN IMMEDIATE before there was a turn to take.
    """
    async with engine.connect() as connection, write_turn(engine), connection.begin():
        yield connection
