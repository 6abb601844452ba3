"""Hot reads run on the driver's own connection on PostgreSQL (issue 15).

SQLAlchemy's execution path (the compiled cache, parameter and result processing,
a greenlet hop each way) cost 110 us of Python per balance read on asyncpg, where
asyncpg alone spends about 40 (bench/PROFILE.md). A :class:`DirectRead` is a Core
statement compiled once for the connection's dialect and then executed by asyncpg
with positional arguments, so the statement is still written once, in Core, and
SQLite runs it through SQLAlchemy as before.

Only for statements whose columns need no processing by SQLAlchemy on PostgreSQL:
numbers, text, booleans, and ``timestamptz``, which asyncpg returns as aware UTC
datetimes (what :class:`~tokenbank.db.types.UTCDateTime` makes of them anyway).
Directly only outside a transaction (autocommit reads); inside one, through
SQLAlchemy: its adapter begins a transaction lazily, at its own first statement,
and a statement sent past it would run before that.

:func:`retried_read` also saves the checkout's ping (a round trip, 60-75 us of
CPU): a read can simply run again, on a pinged connection, when the one it got
turns out to be closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from tokenbank.db.engine import UNPINGED_CHECKOUT, read_transaction

ASYNCPG = "asyncpg"
Read = TypeVar("Read")


class AttributeRecord(asyncpg.Record):  # type: ignore[misc]  # asyncpg ships no stubs for it
    """A record read like a SQLAlchemy row: ``row.balance_tokens``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class DirectRead:
    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: SQLCompiler | None = None

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows; directly on an autocommit asyncpg connection, else through
        SQLAlchemy (SQLite, or inside a transaction)."""
        driver = _asyncpg(conn)
        if driver is None or not getattr(_adapted(conn), "autocommit", False):
            return list((await conn.execute(self.statement, dict(params))).all())
        compiled = self._compiled_for(conn.dialect)
        arguments = [params[name] for name in compiled.positiontup or ()]
        records: list[Any] = await driver.fetch(
            compiled.string, *arguments, record_class=AttributeRecord
        )
        return records

    def _compiled_for(self, dialect: Dialect) -> SQLCompiler:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            assert isinstance(compiled, SQLCompiler)
            self._compiled = compiled
        return self._compiled


async def retried_read(
    engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[Read]]
) -> Read:
    """``read`` on a read_transaction connection handed out without its ping; if the
    server had closed that connection (a restart, ``pg_terminate_backend``), the
    connection is dropped and ``read`` runs once more on a pinged one. Only for
    reads: running one twice changes nothing."""
    token = UNPINGED_CHECKOUT.set(True)
    try:
        async with read_transaction(engine) as conn:
            try:
                return await read(conn)
            except Exception as error:
                if not _connection_lost(conn, error):
                    raise
                if not conn.invalidated:
                    await conn.invalidate()
    finally:
        UNPINGED_CHECKOUT.reset(token)
    async with read_transaction(engine) as conn:
        return await read(conn)


def _connection_lost(conn: AsyncConnection, error: Exception) -> bool:
    """Whether ``error`` came from a connection the server had closed: SQLAlchemy
    says so of its statements (and invalidates the connection); a direct read's
    asyncpg connection is closed by then."""
    if conn.invalidated or (isinstance(error, DBAPIError) and error.connection_invalidated):
        return True
    driver = _asyncpg(conn)
    return driver is not None and bool(driver.is_closed())


def _adapted(conn: AsyncConnection) -> Any:
    """SQLAlchemy's adapter of the DBAPI connection (None without one)."""
    return conn.sync_connection.connection.dbapi_connection if conn.sync_connection else None


def _asyncpg(conn: AsyncConnection) -> asyncpg.Connection[Any] | None:
    """The asyncpg connection under ``conn``, on PostgreSQL; None elsewhere."""
    if conn.dialect.driver != ASYNCPG or conn.sync_connection is None:
        return None
    driver: asyncpg.Connection[Any] = conn.sync_connection.connection.driver_connection
    return driver
