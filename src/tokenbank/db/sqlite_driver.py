"""SQLite connections that spend as little as possible of the write lock's time
waiting for the event loop (issue 15).

aiosqlite runs every call on the connection's own thread and hands the result back
to the event loop, and SQLAlchemy's adapter makes four such calls per statement
(open a cursor, execute, fetch all, close). Each comes back only when the event loop
next gets to it, which under load is after the other requests' work of that turn:
a debit batch held the database's one write lock for about 4 ms, most of it
waiting so, while the other server process waited for the lock (bench/PROFILE.md).

:class:`OneHopConnection` is aiosqlite's connection with two changes:

- A statement is one call on the connection's thread (execute, fetch, close), its
  rows kept for the adapter's fetch. Reads run so: they may be long (a history
  page), and the event loop goes on serving meanwhile.
- Inside a writing transaction everything runs on the caller's thread, without a
  hop: ``BEGIN IMMEDIATE`` (tried with no busy wait; if another program holds the
  lock, it waits in the thread, up to the busy timeout), the statements, and the
  ``COMMIT`` with its sync. Nothing in there waits for a lock (the transaction holds
  the database's), and every moment of it is a moment no other writer can write:
  a few hundred microseconds of the event loop's time, against a turn of the loop
  per hop.

Everything else (the thread, its queue, connect, close, which SQLAlchemy's adapter
reaches into as well) is aiosqlite's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

_T = TypeVar("_T")
BEGIN_WRITING = "BEGIN IMMEDIATE"
BEGIN_READING = "BEGIN"
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
        if sql == BEGIN_WRITING:
            await self._connection.begin_writing()
            return self
        if sql == BEGIN_READING:
            self._connection.begin_reading()
            return self

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

        if connection.writing:
            outcome = in_thread()
        else:
            outcome = await connection._execute(in_thread)  # type: ignore[no-untyped-call]
        self.description, self.rowcount, self.lastrowid, self._rows = outcome


class OneHopConnection(aiosqlite.Connection):
    # Inside BEGIN IMMEDIATE ... COMMIT: statements run on the caller's thread.
    writing = False
    # Inside BEGIN ... COMMIT of a read: its end runs on the caller's thread.
    reading = False
    _busy_timeout_ms: int | None = None

    def cursor(self) -> OneHopCursor:  # type: ignore[override]  # no hop to open one
        return OneHopCursor(self)

    def run_writing(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work`` on the sqlite3 connection, now: only inside a writing transaction,
        where nothing waits for a lock (this connection holds the database's)."""
        if not self.writing:
            raise RuntimeError("run_writing outside BEGIN IMMEDIATE ... COMMIT")
        return work(self._conn)

    async def begin_writing(self) -> None:
        if not self._begin_now():
            await self._execute(self._conn.execute, BEGIN_WRITING)  # type: ignore[no-untyped-call]
        self.writing = True

    def _begin_now(self) -> bool:
        connection = self._conn
        if self._busy_timeout_ms is None:
            (self._busy_timeout_ms,) = connection.execute("PRAGMA busy_timeout").fetchone()
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            connection.execute(BEGIN_WRITING)
            return True
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    def begin_reading(self) -> None:
        """A deferred BEGIN takes no lock (the first read takes the snapshot): now."""
        self._conn.execute(BEGIN_READING)
        self.reading = True

    async def commit(self) -> None:
        await self._end(self._conn.commit)

    async def rollback(self) -> None:
        await self._end(self._conn.rollback)

    async def _end(self, end: Callable[[], None]) -> None:
        """A write's COMMIT (its sync) and a read's end (no lock waited for, no I/O)
        now; nothing at all outside a transaction (the pool's rollback on return)."""
        inline = self.writing or self.reading
        self.writing = self.reading = False
        if inline:
            end()
        elif self._connection is not None and self._conn.in_transaction:
            await self._execute(end)  # type: ignore[no-untyped-call]


async def run_now(
    conn: AsyncConnection, work: Callable[[sqlite3.Connection], _T], statement: str
) -> _T:
    """``work`` on the sqlite3 connection under ``conn``, now (only inside a writing
    transaction: :meth:`OneHopConnection.run_writing`); sqlite3's errors become
    SQLAlchemy's, as if ``statement`` had gone through it (a refused row is an
    ``IntegrityError`` to the writer either way)."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, OneHopConnection)
    try:
        return driver.run_writing(work)
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error


def one_hop_connector(url: str, connect_args: dict[str, Any]) -> Callable[[], Any]:
    """``create_async_engine``'s ``async_creator``: the connection SQLAlchemy's
    aiosqlite dialect would open for ``url``, as a :class:`OneHopConnection`."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    kwargs = {**kwargs, **connect_args, "check_same_thread": False}
    open_sqlite: Callable[..., sqlite3.Connection] = sqlite3.connect

    async def connect() -> OneHopConnection:
        connection = OneHopConnection(lambda: open_sqlite(*args, **kwargs), 64)
        # As SQLAlchemy does for aiosqlite's own: a connection the pool never closed
        # must not keep the interpreter from exiting.
        connection._thread.daemon = True
        await connection
        return connection

    return connect
