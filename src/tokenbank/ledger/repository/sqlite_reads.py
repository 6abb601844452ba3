"""The batch kernel's reads on SQLite, run by sqlite3 itself.

The kernel reads the holds it captures, the wallets with their live grants, and the
idempotency keys inside its writing transaction, while it holds the database's one
write lock (db/sqlite_driver.py runs that transaction on the event loop's thread).
Through SQLAlchemy each read cost about 180 us of Python (an execution context, the
parameters, the result's metadata and rows), a seventh of a batch's turn. Here each
is the SQL SQLAlchemy compiles for the same statement (once per statement and
number of values), run by sqlite3, with each result column's own conversion (text
to datetime, say), its rows as named tuples that answer the same attribute reads
as SQLAlchemy's rows.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

from tokenbank.db.rows import AnyRow
from tokenbank.db.sqlite_driver import run_now

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Read:
    """A statement compiled for a number of values, with what makes its rows."""

    sql: str
    make_row: Callable[..., tuple[Any, ...]]
    processors: tuple[Processor, ...]

    def rows(self, found: list[tuple[Any, ...]]) -> list[AnyRow]:
        if all(convert is None for convert in self.processors):
            return cast(list[AnyRow], [self.make_row(*row) for row in found])
        return cast(list[AnyRow], [self.make_row(*self._converted(row)) for row in found])

    def _converted(self, row: tuple[Any, ...]) -> list[Any]:
        return [
            value if convert is None or value is None else convert(value)
            for value, convert in zip(row, self.processors, strict=True)
        ]


# Bounded, as batch_sqlite's INSERTs are: an entry per number of values a batch has
# had, for each statement and engine.
@functools.lru_cache(maxsize=4096)
def _compiled(statement: Select[Any], name: str, shape: tuple[int, int], dialect: Dialect) -> _Read:
    """``statement`` with its one expanding parameter ``name`` rendered for ``count``
    values of ``width`` columns each (``shape``); plain strings only, which sqlite3
    takes as they are."""
    count, width = shape
    dummy: list[Any] = [("",) * width if width > 1 else "" for _ in range(count)]
    compiled = statement.params({name: dummy}).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True}
    )
    assert isinstance(compiled, SQLCompiler)
    if len(compiled.positiontup or ()) != count * width:
        raise ValueError(f"{name}: the statement takes other parameters as well")
    columns = statement.selected_columns
    return _Read(
        sql=compiled.string,
        make_row=namedtuple("Row", list(columns.keys()), rename=False),
        processors=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ),
    )


async def select_now(
    conn: AsyncConnection, statement: Select[Any], name: str, values: Sequence[Any]
) -> list[AnyRow]:
    """The rows of ``statement`` with ``values`` (strings, or tuples of strings) for
    its expanding parameter ``name``, read on this thread: only inside a writing
    transaction, where nothing waits for a lock."""
    if not values:
        return []
    width = len(values[0]) if isinstance(values[0], tuple) else 1
    read = _compiled(statement, name, (len(values), width), conn.dialect)
    flat = [part for value in values for part in value] if width > 1 else list(values)
    found = await run_now(conn, lambda sqlite: sqlite.execute(read.sql, flat).fetchall(), read.sql)
    return read.rows(found)
