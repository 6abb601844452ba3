"""What the signed-in user's pages read of the ledger: a wallet's live figures, its
history a page (or a chunk) at a time, and its usage by day.

Every statement starts from one wallet id and walks an index that starts with it:
``wallets`` by its unique ``user_id``; the history by ``ix_ledger_entries_wallet_id``
(wallet, entry id: its order), each entry's transaction by its key; usage by
``ix_ledger_transactions_wallet_created`` (wallet, time: a period), each
transaction's entries by ``ix_ledger_entries_transaction_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.tables import entries, transactions, wallets

# Usage is what debits took (captures of holds are debits too); credits, refunds,
# expiries and clawbacks are not work that was done.
USAGE_KIND = "debit"
NO_MODEL = ""


async def wallet_id_of(conn: AsyncConnection, user_id: str) -> int | None:
    found = await conn.scalar(select(wallets.c.id).where(wallets.c.user_id == user_id))
    return None if found is None else int(found)


async def wallet_figures(conn: AsyncConnection, user_id: str) -> tuple[int, int] | None:
    """(balance, held) of a wallet: one row by a unique index, for polling."""
    statement = select(wallets.c.balance_tokens, wallets.c.held_tokens).where(
        wallets.c.user_id == user_id
    )
    row = (await conn.execute(statement)).first()
    return None if row is None else (int(row.balance_tokens), int(row.held_tokens))


# A transaction moves exactly one wallet, its header's (decision 2): its wallet leg is
# the entry that is not a system account's. Said so rather than ``wallet_id = :id``
# where a statement walks the transactions: SQLite (without statistics) would answer
# that through (wallet_id, id), walking all of the wallet's entries for every
# transaction (13 s for a page of a wallet with 100,000 entries).
_WALLET_LEG = entries.c.system_account.is_(None)


def _history_rows() -> Select[Any]:
    """The columns of a history row: an entry with its transaction's."""
    return (
        select(
            entries.c.id,
            entries.c.transaction_id,
            entries.c.amount_tokens,
            entries.c.balance_after,
            transactions.c.created_at,
            transactions.c.operation_type,
            transactions.c.description,
        )
        .select_from(entries)
        .join(transactions, transactions.c.id == entries.c.transaction_id)
    )


async def history(
    conn: AsyncConnection,
    wallet_id: int,
    *,
    operation_type: str | None,
    start: datetime | None,
    end: datetime | None,
    before_id: int | None = None,
    limit: int,
    offset: int = 0,
) -> list[AnyRow]:
    """A page of the wallet's entries with their transactions, newest first: in the
    order they were written, which is the order of the wallet's balance chain.

    The page walks (wallet_id, id) down from the newest entry, or from ``before_id``:
    an export takes the whole history a chunk at a time that way, never from an ever
    larger offset. Without a type to match, it picks the page's entry ids from that
    index alone and joins only them: page 200 of a 40,000-entry wallet skipped 10,000
    index entries in 1 ms on PostgreSQL, where joining every skipped row first took
    118 ms. The dates bound the entries' own time (a transaction's entries carry its
    time); a type needs the transaction, so that walk joins as it goes."""
    walk = [entries.c.wallet_id == wallet_id]
    if start is not None:
        walk.append(entries.c.created_at >= start)
    if end is not None:
        walk.append(entries.c.created_at < end)
    if before_id is not None:
        walk.append(entries.c.id < before_id)
    newest_first = entries.c.id.desc()
    if operation_type is not None:
        statement = _history_rows().where(*walk, transactions.c.operation_type == operation_type)
        statement = statement.order_by(newest_first).limit(limit).offset(offset)
    else:
        page_ids = select(entries.c.id).where(*walk).order_by(newest_first)
        page_ids = page_ids.limit(limit).offset(offset)
        statement = _history_rows().where(entries.c.id.in_(page_ids)).order_by(newest_first)
    return list((await conn.execute(statement)).all())


def _day(conn: AsyncConnection) -> ColumnElement[Any]:
    """The UTC day of a transaction as 'YYYY-MM-DD' text, on either engine."""
    if conn.dialect.name == "sqlite":
        # SQLite keeps naive UTC text 'YYYY-MM-DD HH:MM:SS...' (db/types.py).
        return func.substr(transactions.c.created_at, 1, 10)
    return func.to_char(func.timezone("UTC", transactions.c.created_at), "YYYY-MM-DD")


def _model() -> ColumnElement[Any]:
    """The model a charge was priced for: the pricing record's (the token process and
    usage pricing write it), else the app's metadata ``model``, else none."""
    return func.coalesce(
        transactions.c.pricing["model"].as_string(),
        transactions.c.metadata["model"].as_string(),
        literal(NO_MODEL),
    )


def _usage(conn: AsyncConnection) -> tuple[Select[Any], list[ColumnElement[Any]]]:
    """(day, operation_type, model, tokens, operations) of debits' wallet legs, to be
    filtered by the caller, and what to group it by."""
    day = _day(conn).label("day")
    model = _model().label("model")
    keys: list[ColumnElement[Any]] = [day, transactions.c.operation_type, model]
    statement = select(
        *keys,
        func.sum(-entries.c.amount_tokens).label("tokens"),
        func.count().label("operations"),
    )
    return statement, keys


async def usage_by_day(
    conn: AsyncConnection, wallet_id: int, since: datetime, *, upto_id: int | None = None
) -> list[AnyRow]:
    """Tokens the wallet's debits took since ``since`` (in entries up to ``upto_id``),
    by UTC day, operation type and model: (day, operation_type, model, tokens,
    operations). Walks the wallet's transactions by time: for a whole period."""
    usage, keys = _usage(conn)
    statement = (
        usage.select_from(transactions)
        .join(
            entries,
            and_(entries.c.transaction_id == transactions.c.id, _WALLET_LEG),
        )
        .where(
            transactions.c.wallet_id == wallet_id,
            transactions.c.created_at >= since,
            transactions.c.kind == USAGE_KIND,
        )
    )
    if upto_id is not None:
        statement = statement.where(entries.c.id <= upto_id)
    return list((await conn.execute(statement.group_by(*keys))).all())


async def usage_after_entry(
    conn: AsyncConnection, wallet_id: int, since: datetime, after_id: int, upto_id: int | None
) -> list[AnyRow]:
    """``usage_by_day`` of the wallet's entries after ``after_id`` only (and up to
    ``upto_id``): walks (wallet, entry id), so that it reads only the newest entries."""
    usage, keys = _usage(conn)
    statement = (
        usage.select_from(entries)
        .join(transactions, transactions.c.id == entries.c.transaction_id)
        .where(
            entries.c.wallet_id == wallet_id,
            entries.c.id > after_id,
            transactions.c.created_at >= since,
            transactions.c.kind == USAGE_KIND,
        )
    )
    if upto_id is not None:
        statement = statement.where(entries.c.id <= upto_id)
    return list((await conn.execute(statement.group_by(*keys))).all())


async def wallet_settled_mark(
    conn: AsyncConnection, wallet_id: int, after_id: int, before: datetime
) -> int:
    """The wallet's highest entry id after ``after_id`` among its entries written
    before ``before`` (``after_id`` when none is)."""
    statement = select(func.max(entries.c.id)).where(
        entries.c.wallet_id == wallet_id, entries.c.id > after_id, entries.c.created_at < before
    )
    found = await conn.scalar(statement)
    return after_id if found is None else int(found)


async def wallet_entry_count(conn: AsyncConnection, wallet_id: int, upto_id: int) -> int:
    """How many of the wallet's entries have an id up to ``upto_id``."""
    statement = (
        select(func.count())
        .select_from(entries)
        .where(entries.c.wallet_id == wallet_id, entries.c.id <= upto_id)
    )
    return int(await conn.scalar(statement) or 0)
