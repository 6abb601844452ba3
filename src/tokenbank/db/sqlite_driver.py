"""aiosqlite connections whose statements cost one thread hop each (issue 15).

aiosqlite runs every call on the connection's own thread and hands the result back
to the event loop: a hop each way. SQLAlchemy's adapter makes four such calls per
statement (open a cursor, execute, fetch all, close), and a hop is the expensive
part of a SQLite statement here: a debit batch on SQLite measured 4 ms of wall time
for 8 debits, most of it in those hops, while it held the database's one write
lock (bench/PROFILE.md).

:class:`OneHopConnection` is aiosqlite's connection with one change: its cursors
run execute, fetch and close as one function on the connection's thread, and keep
the rows for the adapter's fetch. Everything else (the thread, its queue, commit,
rollback, close, which SQLAlchemy's adapter reaches into as well) is aiosqlite's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url

# What a cursor reports after a statement: description, rowcount, lastrowid, rows.
_Outcome = tuple[Any, int, int | None, list[Any]]


class OneHopCursor:
    """The part of aiosqlite's cursor that SQLAlchemy's adapter uses, with the
    statement's rows read in the same hop as the statement."""

    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneHopCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> OneHopCursor:
        def run(cursor: sqlite3.Cursor) -> None:
            if parameters is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, parameters)

        await self._run(run)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> OneHopCursor:
        await self._run(lambda cursor: cursor.executemany(sql, parameters))
        return self

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = size or self.arraysize
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._rows = []

    async def _run(self, statement: Callable[[sqlite3.Cursor], object]) -> None:
        connection = self._connection

        def in_thread() -> _Outcome:
            cursor = connection._conn.cursor()
            try:
                statement(cursor)
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, cursor.rowcount, cursor.lastrowid, rows
            finally:
                cursor.close()

        outcome: _Outcome = await connection._execute(in_thread)  # type: ignore[no-untyped-call]
        self.description, self.rowcount, self.lastrowid, self._rows = outcome


class OneHopConnection(aiosqlite.Connection):
    def cursor(self) -> OneHopCursor:  # type: ignore[override]  # no hop to open one
        return OneHopCursor(self)


def one_hop_connector(url: str, connect_args: dict[str, Any]) -> Callable[[], Any]:
    """``create_async_engine``'s ``async_creator``: the connection SQLAlchemy's
    aiosqlite dialect would open for ``url``, as a :class:`OneHopConnection`."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    kwargs = {**kwargs, **connect_args}
    open_sqlite: Callable[..., sqlite3.Connection] = sqlite3.connect

    async def connect() -> OneHopConnection:
        connection = OneHopConnection(lambda: open_sqlite(*args, **kwargs), 64)
        # As SQLAlchemy does for aiosqlite's own: a connection the pool never closed
        # must not keep the interpreter from exiting.
        connection._thread.daemon = True
        await connection
        return connection

    return connect
