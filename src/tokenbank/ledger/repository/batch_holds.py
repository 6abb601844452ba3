"""The batch kernel's hold statement: the holds a batch captures, read and locked up
front (the holds it places and captures are written with its other rows, by
``batch_postgres`` and ``batch_sqlite``)."""

from __future__ import annotations

from sqlalchemy import String, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import is_sqlite
from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.sqlite_reads import select_now
from tokenbank.ledger.repository.tables import holds, wallets

_HOLD_COLUMNS = (
    holds.c.id,
    holds.c.wallet_id,
    wallets.c.user_id,
    holds.c.amount_tokens,
    holds.c.status,
    holds.c.operation_type,
    holds.c.expires_at,
)
# FOR UPDATE OF the holds: a capture judges the hold's status, so no other request
# may resolve it before this transaction ends. Holds first, then wallets: the order
# a capture and a void take one at a time (their UPDATE of the hold, then the wallet).
_LOCK_HOLDS = (
    select(*_HOLD_COLUMNS)
    .join(wallets, wallets.c.id == holds.c.wallet_id)
    .where(holds.c.id.in_(bindparam("hold_ids", expanding=True)))
    .order_by(holds.c.id)
    .with_for_update(of=holds)
)
# PostgreSQL takes the ids as one array: one SQL text whatever their number.
_LOCK_HOLDS_POSTGRES = (
    select(*_HOLD_COLUMNS)
    .join(wallets, wallets.c.id == holds.c.wallet_id)
    .where(holds.c.id == func.any(bindparam("hold_ids", type_=postgresql.ARRAY(String))))
    .order_by(holds.c.id)
    .with_for_update(of=holds)
)


async def lock_holds(conn: AsyncConnection, hold_ids: list[str]) -> dict[str, AnyRow]:
    """The holds by id (those that exist), each with its wallet's user, locked."""
    if is_sqlite(conn):
        rows = await select_now(conn, _LOCK_HOLDS, "hold_ids", hold_ids)
    else:
        rows = list(await conn.execute(_LOCK_HOLDS_POSTGRES, {"hold_ids": hold_ids}))
    return {row.id: row for row in rows}
