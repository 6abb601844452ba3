"""Hot reads run on asyncpg directly on PostgreSQL (issue 15).

SQLAlchemy's execution path (the compiled cache, parameter and result processing,
a greenlet hop each way) cost 110 us of Python per balance read on asyncpg, where
asyncpg alone spends about 40 (bench/PROFILE.md). A :class:`DirectRead` is a Core
statement compiled once for the connection's dialect and then executed by asyncpg
with positional arguments, so the statement is still written once, in Core, and
SQLite runs it through SQLAlchemy as before.

Inside a transaction, :func:`driver_fetch` sends a statement written for asyncpg
(the batch kernel's writes) on the transaction's own connection.

Only for statements whose columns need no processing by SQLAlchemy on PostgreSQL:
numbers, text, booleans, and ``timestamptz``, which asyncpg returns as aware UTC
datetimes (what :class:`~tokenbank.db.types.UTCDateTime` makes of them anyway).

A read on its own (:meth:`DirectRead.read`) takes its connection from the hot reads'
asyncpg pool (db/read_pool.py), which runs it again if the connection it got turns out
closed. Inside a transaction (:meth:`DirectRead.rows`) it goes through SQLAlchemy: its
adapter begins a transaction lazily, at its own first statement, and a statement sent
past it would run before that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from tokenbank.db.engine import read_pool, read_transaction
from tokenbank.db.read_pool import CONNECTION_ERRORS


class DirectRead:
    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: SQLCompiler | None = None

    async def read(self, engine: AsyncEngine, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows, read on their own: by the hot reads' pool on PostgreSQL, in a
        read transaction on SQLite."""
        pool = read_pool(engine)
        if pool is None:
            async with read_transaction(engine) as conn:
                return await self.rows(conn, params)
        compiled = self._compiled_for(engine.dialect)
        arguments = [params[name] for name in compiled.positiontup or ()]
        return await pool.fetch(compiled.string, arguments)

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows, through SQLAlchemy on the caller's connection (in its transaction)."""
        return list((await conn.execute(self.statement, dict(params))).all())

    def _compiled_for(self, dialect: Dialect) -> SQLCompiler:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            assert isinstance(compiled, SQLCompiler)
            self._compiled = compiled
        return self._compiled


async def driver_fetch(conn: AsyncConnection, sql: str, arguments: Sequence[Any]) -> list[Any]:
    """``sql`` (asyncpg's ``$n`` parameters) run by asyncpg on ``conn``'s connection;
    its records.

    Only inside a transaction that a statement through SQLAlchemy has begun: the
    adapter sends ``BEGIN`` lazily, with its own first statement, so one sent past it
    before that would run, and commit, on its own. Errors come out as SQLAlchemy's
    would: ``IntegrityError`` for a refused row (the writer then goes one operation at
    a time), ``DBAPIError`` with asyncpg's error (and its SQLSTATE) as ``orig``,
    ``OperationalError`` for a connection lost (SQLAlchemy's rollback then finds it
    gone and drops it from the pool).
    """
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, asyncpg.Connection) or not driver.is_in_transaction():
        raise RuntimeError("driver_fetch runs inside a transaction begun through SQLAlchemy")
    try:
        records: list[Any] = await driver.fetch(sql, *arguments)
    except CONNECTION_ERRORS as error:
        raise OperationalError(sql, None, error, connection_invalidated=True) from error
    except asyncpg.IntegrityConstraintViolationError as error:
        raise IntegrityError(sql, None, error) from error
    except asyncpg.PostgresError as error:
        raise DBAPIError(sql, None, error) from error
    return records
