"""The hot reads' own asyncpg pool on PostgreSQL (issue 15).

A balance read through SQLAlchemy's pool cost 151 us of Python, of which the read
itself (asyncpg's ``fetch``) is about 40: the rest is the checkout and return, each a
greenlet hop, and the isolation level set and reset around them (bench/PROFILE.md).
asyncpg's own pool hands out a connection without any of that, and with ``reset``
left out, returns it without a round trip: its default reset (``RESET ALL``,
``UNLISTEN *``, ...) undoes session state that a single autocommit ``SELECT`` never
sets.

Connections are opened when reads need them, up to half the write pool's size, with
the same server settings (application name, statement timeout). A read that meets a
connection the server had closed (a restart, ``pg_terminate_backend``) runs once more
on a new one, and the pool's other connections are replaced as they are next handed
out (one closed connection usually means they all are). If the database is
unreachable it raises SQLAlchemy's ``OperationalError``, which the API answers with
503 as for every other statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.exc import OperationalError

# Failures that say the connection or the server is gone, not that the statement is
# wrong: a read meeting one may run again, and past that the database is down.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
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


async def _keep_session(_connection: asyncpg.Connection[Any]) -> None:
    """A returned connection needs no reset: see the module's docstring."""


class ReadPool:
    def __init__(self, connect_kwargs: dict[str, Any], *, max_size: int, timeout_seconds: float):
        self._connect_kwargs = connect_kwargs
        self._max_size = max_size
        self._timeout_seconds = timeout_seconds
        self._pool: asyncpg.Pool[Any] | None = None
        self._opening = asyncio.Lock()

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
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _fetch_once(self, sql: str, arguments: Sequence[Any]) -> list[AttributeRecord]:
        try:
            pool = await self._opened()
            async with pool.acquire(timeout=self._timeout_seconds) as connection:
                try:
                    records: list[AttributeRecord] = await connection.fetch(sql, *arguments)
                    return records
                except Exception as error:
                    if not (isinstance(error, _CONNECTION_ERRORS) or _closed(connection)):
                        raise
                    # Not back into the pool; and the pool's other connections most
                    # likely went the same way (a restart, every backend cut): all of
                    # them are replaced as they are next handed out.
                    with contextlib.suppress(asyncpg.InterfaceError):  # released on close
                        connection.terminate()
                    await pool.expire_connections()
                    raise _ConnectionLost(error) from error
        except _CONNECTION_ERRORS as error:  # opening the pool or a connection
            raise _unavailable(sql, error) from error

    async def _opened(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        min_size=0,
                        max_size=self._max_size,
                        reset=_keep_session,
                        record_class=AttributeRecord,
                        **self._connect_kwargs,
                    )
        return self._pool


def _closed(connection: Any) -> bool:
    try:
        return bool(connection.is_closed())
    except asyncpg.InterfaceError:  # a pooled connection that closed went back already
        return True


class _ConnectionLost(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _unavailable(sql: str, error: BaseException) -> OperationalError:
    """What SQLAlchemy raises for a statement on a database it cannot reach."""
    return OperationalError(sql, None, error, connection_invalidated=True)
