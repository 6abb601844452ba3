"""The hot reads' own pool of asyncpg connections on PostgreSQL (issue 15).

A balance read through SQLAlchemy's pool cost 151 us of Python, of which the read
itself (asyncpg's ``fetch``) is about 40: the rest is the checkout and return, each a
greenlet hop, and the isolation level set and reset around them (bench/PROFILE.md).
asyncpg's own pool cost about 120 us more per read than handing a connection over
itself: its ``acquire`` with a timeout runs in a task of its own, its ``release`` in
another (``asyncio.shield``), and each arms timers (measured side by side, 32 tasks
on 16 connections: 198-215 us of CPU per read against 76-82). This pool is that
much and no more: an idle connection is handed out at once; past the size, a read
waits its turn (first come, first served) for at most the statement timeout. A
connection goes back without a reset: a single autocommit ``SELECT`` sets no
session state.

Connections are opened when reads need them, up to half the write pool's size, with
the same server settings (application name, statement timeout). A read that meets a
connection the server had closed (a restart, ``pg_terminate_backend``) runs once more
on a new one, and the pool's other connections are replaced as they are next handed
out (one closed connection usually means they all are). A read cancelled while its
statement runs closes its connection: what the server still has to say is unknown.
If the database is unreachable it raises SQLAlchemy's ``OperationalError``, which the
API answers with 503 as for every other statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy.exc import OperationalError

Connection: TypeAlias = "asyncpg.Connection[Any]"

# Failures that say the connection or the server is gone, not that the statement is
# wrong: a read meeting one may run again, and past that the database is down.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # ConnectionDoesNotExistError: closed under the read
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,  # pg_terminate_backend, a fast shutdown
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InternalClientError,  # the protocol lost its place: the connection is done
)


class AttributeRecord(asyncpg.Record):  # type: ignore[misc]  # asyncpg ships no stubs for it
    """A record read like a SQLAlchemy row: ``row.balance_tokens``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ReadPool:
    def __init__(self, connect_kwargs: dict[str, Any], *, max_size: int, timeout_seconds: float):
        self._connect_kwargs = connect_kwargs
        self._max_size = max_size
        self._timeout_seconds = timeout_seconds
        self._idle: deque[Connection] = deque()
        # A waiter gets a connection, or None: a place freed, for it to open one in.
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._size = 0  # connections open, being opened, or promised to a waiter
        # Bumped when a connection is found cut: older connections are replaced.
        self._generation = 0
        self._generations: dict[Connection, int] = {}
        self._closed = False

    async def fetch(self, sql: str, arguments: Sequence[Any]) -> list[AttributeRecord]:
        """The rows of one autocommit read; once more on a new connection if the one
        it got had been closed by the server."""
        try:
            return await self._fetch_once(sql, arguments)
        except _ConnectionLost:
            pass
        try:
            return await self._fetch_once(sql, arguments)
        except _ConnectionLost as lost:
            raise _unavailable(sql, lost.error) from lost.error

    async def close(self) -> None:
        """Close the idle connections; one in use closes when its read returns it."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().cancel()
        while self._idle:
            connection = self._idle.pop()
            self._forget(connection)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await connection.close(timeout=self._timeout_seconds)

    async def _fetch_once(self, sql: str, arguments: Sequence[Any]) -> list[AttributeRecord]:
        try:
            connection = await self._acquire()
        except CONNECTION_ERRORS as error:  # opening a connection, or none came in time
            raise _unavailable(sql, error) from error
        try:
            records: list[AttributeRecord] = await connection.fetch(sql, *arguments)
        except Exception as error:
            if not (isinstance(error, CONNECTION_ERRORS) or connection.is_closed()):
                self._release(connection)
                raise
            # The pool's other connections most likely went the same way (a restart,
            # every backend cut): each is replaced as it is next handed out.
            self._generation += 1
            self._discard(connection)
            raise _ConnectionLost(error) from error
        except BaseException:  # cancelled mid-statement
            self._discard(connection)
            raise
        self._release(connection)
        return records

    async def _acquire(self) -> Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the hot reads' pool is closed")
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the warmest
            if self._usable(connection):
                return connection
            self._discard(connection)
        if self._size < self._max_size:
            self._size += 1
            return await self._open()
        handed = await self._wait()
        return handed if handed is not None else await self._open()

    async def _wait(self) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout_seconds):
                return await waiter
        except BaseException:
            # Handed something just as the wait ended: pass it on.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is None:
                    self._free_place()
                else:
                    self._release(handed)
            raise

    async def _open(self) -> Connection:
        """A new connection, in a place already counted in ``_size``."""
        try:
            connection: Connection = await asyncpg.connect(
                record_class=AttributeRecord, **self._connect_kwargs
            )
        except BaseException:
            self._free_place()
            raise
        self._generations[connection] = self._generation
        return connection

    def _usable(self, connection: Connection) -> bool:
        current = self._generations.get(connection) == self._generation
        return current and not connection.is_closed()

    def _release(self, connection: Connection) -> None:
        if self._closed or not self._usable(connection):
            self._discard(connection)
            return
        waiter = self._next_waiter()
        if waiter is None:
            self._idle.append(connection)
        else:
            waiter.set_result(connection)

    def _discard(self, connection: Connection) -> None:
        """Close a connection and free its place."""
        self._forget(connection)
        with contextlib.suppress(asyncpg.InterfaceError):
            connection.terminate()
        self._free_place()

    def _forget(self, connection: Connection) -> None:
        self._generations.pop(connection, None)

    def _free_place(self) -> None:
        """A place freed: the first reader still waiting opens a connection in it."""
        self._size -= 1
        waiter = None if self._closed else self._next_waiter()
        if waiter is not None:
            self._size += 1
            waiter.set_result(None)

    def _next_waiter(self) -> asyncio.Future[Connection | None] | None:
        """The first read still waiting (not timed out or cancelled), if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None


class _ConnectionLost(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _unavailable(sql: str, error: BaseException) -> OperationalError:
    """What SQLAlchemy raises for a statement on a database it cannot reach."""
    return OperationalError(sql, None, error, connection_invalidated=True)
