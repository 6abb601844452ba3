"""Hot reads run on asyncpg directly on PostgreSQL (issue 15).

SQLAlchemy's execution path (the compiled cache, parameter and result processing,
a greenlet hop each way) cost 110 us of Python per balance read on asyncpg, where
asyncpg alone spends about 40 (bench/PROFILE.md). A :class:`DirectRead` is a Core
statement compiled once for the connection's dialect and then executed by asyncpg
with positional arguments, so the statement is still written once, in Core, and
SQLite runs it through SQLAlchemy as before.

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

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from tokenbank.db.engine import read_pool, read_transaction


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
