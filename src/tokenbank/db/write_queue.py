"""SQLite's writers take turns in a queue instead of polling the database's lock.

SQLite has one writer at a time. A writer that finds the lock taken sleeps and tries
again (its busy handler: 1, 2, 5, 10 ... up to 100 ms between tries), so with two
server processes on one file the one that just committed nearly always wins the
lock again, and the other's requests waited up to a second (deduct p99 1,019 ms
with two workers against 38 ms with one, bench/PROFILE.md).

Here a writing transaction first waits its turn: in its process behind an
``asyncio.Lock`` (first come, first served), then across processes on an exclusive
``flock`` of a file beside the database (``<database>-writer.lock``), which the
kernel hands over the moment its holder lets go. Only then does it ``BEGIN
IMMEDIATE``, which no longer waits. A process that dies releases its ``flock``.

Writers that do not queue (another program, a migration) still meet SQLite's own
lock and busy timeout: the queue orders tokenbank's writers, SQLite still decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

LOCK_FILE_SUFFIX = "-writer.lock"


@dataclass
class _Ticket:
    """One wait for the file lock, which a waiter that gave up leaves to the thread."""

    guard: threading.Lock = field(default_factory=threading.Lock)
    held: bool = False
    abandoned: bool = False


class WriteQueue:
    """The queue of one SQLite database's writers in this process."""

    def __init__(self, database_path: str, *, timeout_seconds: float) -> None:
        self.lock_path = database_path + LOCK_FILE_SUFFIX
        self._timeout_seconds = timeout_seconds
        self._in_process = asyncio.Lock()
        self._fd: int | None = None
        self._fd_pid = 0
        # One thread, started only when the file lock is contended: a blocking
        # flock cannot wait on the event loop.
        self._waiter = _Waiter()
        weakref.finalize(self, self._waiter.stop)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the database's write turn for the block (a ``BEGIN IMMEDIATE`` ...
        ``COMMIT``); OperationalError "database is locked" after the busy timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_seconds
        try:
            await asyncio.wait_for(self._in_process.acquire(), self._timeout_seconds)
        except TimeoutError:
            raise _locked() from None
        try:
            fd = self._lock_fd()
            await self._lock_file(fd, deadline - loop.time())
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._in_process.release()

    def _lock_fd(self) -> int:
        # A forked child shares its parent's open file, and with it the parent's
        # flock: it opens its own.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd_pid = os.getpid()
            weakref.finalize(self, os.close, self._fd)
        return self._fd

    async def _lock_file(self, fd: int, timeout_seconds: float) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return  # free: no thread involved
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        ticket = _Ticket()
        wait = self._waiter.wait(fd, ticket)
        try:
            await asyncio.wait_for(asyncio.shield(wait), max(timeout_seconds, 0.0))
        except BaseException as error:  # the timeout, or the caller cancelled
            with ticket.guard:
                got_it = ticket.held
                # Not yet: the thread lets go of the lock once it has it.
                ticket.abandoned = not got_it
            timed_out = isinstance(error, TimeoutError)
            if got_it and timed_out:
                return  # it came just as the wait ended
            if got_it:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if timed_out:
                raise _locked() from None
            raise


_Job = tuple[int, _Ticket, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class _Waiter:
    """A daemon thread that waits for the file lock, one wait after another (an
    abandoned wait lets go of the lock before the next wait takes it: both use one
    open file, whose flock a second wait would find already held).

    A daemon, unlike an executor's thread: a process that gave up waiting (its busy
    timeout ran out) must still be able to exit while another process holds the
    lock, and an executor's threads are joined at exit, this one still in flock.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def wait(self, fd: int, ticket: _Ticket) -> asyncio.Future[None]:
        """A future that is done when this wait has the lock (or gave it back)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((fd, ticket, loop, done))
        with self._starting:
            # Not alive in a forked child, which inherits the object but no thread.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tokenbank-sqlite-turn", daemon=True
                )
                self._thread.start()
        return done

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fd, ticket, loop, done = job
            _wait_for(fd, ticket)
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(_finish, done)


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _wait_for(fd: int, ticket: _Ticket) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)
    with ticket.guard:
        if ticket.abandoned:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            ticket.held = True


def _locked() -> OperationalError:
    """What SQLite itself raises when its busy timeout runs out."""
    return OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
