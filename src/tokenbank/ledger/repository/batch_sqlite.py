"""The batch kernel's writes on SQLite, run by sqlite3 itself.

On SQLite the statements of a writing transaction run on the event loop's thread
(db/sqlite_driver.py), so the time a batch takes is the time the database's one
write lock is held, and every other writer waits it out. Through SQLAlchemy the
batch's writes were six statements at about 180 us of Python each, most of it
building and processing parameters row by row; here each is one ``executemany`` of
rows made directly, with the same SQL SQLAlchemy compiles (cached per table and
columns) and the same value conversions (each column type's own bind processor).

The CHECK constraints and triggers judge every row as they judge the per-operation
path's, and a refused row raises SQLAlchemy's ``IntegrityError``: the writer rolls
the batch back and applies it one operation at a time, as on PostgreSQL.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

from tokenbank.db.sqlite_driver import run_now
from tokenbank.ledger.repository.tables import (
    entries,
    grant_movements,
    holds,
    idempotency_keys,
    transactions,
    wallets,
)
from tokenbank.ledger.repository.tables import grants as grants_table

Processor = Callable[[Any], Any] | None

_WALLET_CHANGES = (
    "UPDATE wallets SET balance_tokens = balance_tokens + ?, spent_tokens = spent_tokens + ?,"
    " held_tokens = held_tokens + ?, status = ?, suspended_reason = ?,"
    " next_grant_event_at = ?, updated_at = ? WHERE id = ?"
)
_GRANT_CHANGES = "UPDATE grants SET remaining_tokens = remaining_tokens + ? WHERE id = ?"
_CAPTURES = (
    "UPDATE holds SET status = 'captured', captured_tokens = ?, resolved_at = ?"
    " WHERE id = ? AND status = 'pending'"
)


@dataclass(frozen=True)
class _Insert:
    """An INSERT of some columns of a table, as SQLAlchemy compiles it, with each
    value's conversion and the scalar defaults of the columns a row leaves out."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Processor, ...]
    defaults: dict[str, Any]

    def rows(self, rows: Iterable[dict[str, Any]]) -> list[list[Any]]:
        """Each row's values in the statement's order, converted.

        SQLite's write lock is held while this runs. Column by column, converting a
        value once for the rows that share it (every row of a batch is stamped with
        the same ``now``, and a timestamp's conversion is the costly one): a third of
        the time a generator of each row's values took, converting each.
        """
        if self.defaults:
            rows = [{**self.defaults, **row} for row in rows]
        names = self.names
        values = [[row[name] for name in names] for row in rows]
        for index, convert in enumerate(self.processors):
            if convert is not None:
                _convert_column(values, index, convert)
        return values


def _convert_column(values: list[list[Any]], index: int, convert: Callable[[Any], Any]) -> None:
    seen: object = None
    converted: Any = None
    for row_values in values:
        value = row_values[index]
        if value is None:
            continue
        if value is not seen:  # the same object as the last row's: the same conversion
            seen, converted = value, convert(value)
        row_values[index] = converted


# Keyed by the dialect instance too: bounded, so that engines created and disposed
# (one per test, say) do not stay alive through it. A served engine needs a few.
@functools.lru_cache(maxsize=256)
def _insert(table: Table, columns: frozenset[str], dialect: Dialect) -> _Insert:
    compiled = insert(table).compile(dialect=dialect, column_keys=sorted(columns))
    assert isinstance(compiled, SQLCompiler)
    defaults: dict[str, Any] = {}
    for column in compiled.insert_prefetch:
        default = column.default
        if default is None or not default.is_scalar:  # never in the kernel's tables
            raise ValueError(f"{table.name}.{column.name}: a default only SQLAlchemy can make")
        defaults[column.key] = default.arg  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    return _Insert(
        sql=compiled.string,
        names=names,
        processors=tuple(_processor(table, name, dialect) for name in names),
        defaults=defaults,
    )


def _processor(table: Table, name: str, dialect: Dialect) -> Processor:
    return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)


def _columns(rows: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(column for row in rows for column in row)


_Step = tuple[str, list[Any]]


def _inserting(table: Table, rows: list[dict[str, Any]], dialect: Dialect) -> _Step:
    if not rows:
        return ("", [])
    statement = _insert(table, _columns(rows), dialect)
    return statement.sql, statement.rows(rows)


def _at(timestamp: Processor, moment: datetime | None) -> Any:
    return moment if moment is None or timestamp is None else timestamp(moment)


async def write_batch(
    conn: AsyncConnection,
    *,
    changes: list[dict[str, Any]],
    legs: list[dict[str, Any]],
    grants: list[dict[str, Any]],
    grant_deltas: list[dict[str, int]],
    movements: list[dict[str, Any]],
    headers: list[dict[str, Any]],
    key_rows: list[dict[str, Any]],
    placed_holds: list[dict[str, Any]],
    captured_holds: list[dict[str, Any]],
    now: datetime,
) -> dict[str, int]:
    """Write a batch's wallet changes, holds, grants, entries, headers and keys;
    wallet entry ids by transaction id."""
    dialect = conn.dialect
    next_event = functools.partial(_at, _processor(wallets, "next_grant_event_at", dialect))
    updated = _at(_processor(wallets, "updated_at", dialect), now)
    wallet_changes = [
        (
            change["balance_delta"],
            change["spent_delta"],
            change["held_delta"],
            change["new_status"],
            change["new_reason"],
            next_event(change["next_event_at"]),
            updated,
            change["wallet_id"],
        )
        for change in changes
    ]
    resolved = functools.partial(_at, _processor(holds, "resolved_at", dialect))
    captures = [
        (c["captured_tokens"], resolved(c["resolved_at"]), c["hold_id"]) for c in captured_holds
    ]
    # The per-operation path's order: a capture's header names its hold, and the header
    # trigger checks the grants against the wallets.
    before_captures = [(_WALLET_CHANGES, wallet_changes), _inserting(holds, placed_holds, dialect)]
    grant_steps = [
        _inserting(grants_table, grants, dialect),
        (_GRANT_CHANGES, [(d["delta"], d["grant_id"]) for d in grant_deltas]),
        _inserting(grant_movements, movements, dialect),
    ]
    entry_insert = _insert(entries, _columns(legs), dialect) if legs else None
    last_steps = [
        _inserting(transactions, _uniform(headers), dialect),
        _inserting(idempotency_keys, key_rows, dialect),
    ]

    def run(sqlite: sqlite3.Connection) -> dict[str, int]:
        cursor = sqlite.cursor()
        _run_steps(cursor, before_captures)
        if captures:
            cursor.executemany(_CAPTURES, captures)
            if cursor.rowcount != len(captures):  # locked as pending: cannot happen
                raise RuntimeError("a hold the batch captured was no longer pending")
        _run_steps(cursor, grant_steps)
        entry_ids = _insert_entries(cursor, entry_insert, legs)
        _run_steps(cursor, last_steps)
        return entry_ids

    return await run_now(conn, run, "kernel batch writes")


def _uniform(headers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One INSERT for all headers: the same columns in every row (a capture's names
    its hold, a debit's has none)."""
    columns = {column for header in headers for column in header}
    return [{column: header.get(column) for column in columns} for header in headers]


def _run_steps(cursor: sqlite3.Cursor, steps: Sequence[_Step]) -> None:
    for sql, rows in steps:
        if rows:
            cursor.executemany(sql, rows)


def _insert_entries(
    cursor: sqlite3.Cursor, statement: _Insert | None, legs: list[dict[str, Any]]
) -> dict[str, int]:
    """The entries in batch order (a wallet's balance chain follows their ids), in
    one ``executemany``; then their ids, read back. sqlite3's ``executemany`` returns
    no rows, and one ``execute`` per entry (for its ``lastrowid``) cost a tenth of the
    time a batch holds the write lock. This transaction holds that lock: the rows
    past the largest id before the insert are this batch's, in its order (an id is
    the rowid, given as one more than the largest)."""
    if statement is None:
        return {}
    (largest_before,) = cursor.execute(_LARGEST_ENTRY_ID).fetchone()
    cursor.executemany(statement.sql, statement.rows(legs))
    inserted = cursor.execute(_ENTRIES_AFTER, (largest_before,)).fetchall()
    if len(inserted) != len(legs):
        raise RuntimeError("the batch's entries are not the rows past the largest id")
    return {
        transaction_id: int(entry_id)
        for entry_id, transaction_id, wallet_id in inserted
        if wallet_id is not None
    }


_LARGEST_ENTRY_ID = "SELECT coalesce(max(id), 0) FROM ledger_entries"
_ENTRIES_AFTER = "SELECT id, transaction_id, wallet_id FROM ledger_entries WHERE id > ? ORDER BY id"
