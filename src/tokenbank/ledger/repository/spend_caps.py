"""SQL of the API keys' daily spend counters (issue 14), run inside the debit's transaction."""

from __future__ import annotations

from datetime import date
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import is_sqlite
from tokenbank.db.models import ApiKeyDailySpend

daily_spend = cast(Table, ApiKeyDailySpend.__table__)


async def add_spend(
    conn: AsyncConnection, *, key_id: int, day: date, tokens: int, cap_tokens: int
) -> int | None:
    """Count ``tokens`` against the key's day if the day stays within ``cap_tokens``.

    One atomic statement on both engines: the first spend of the day inserts the row,
    later ones add to it only while ``spent + tokens <= cap`` (judged under the row's
    lock, so concurrent debits of one key never pass the cap together). The day's
    spend after it, or None when it would pass the cap. ``tokens`` must not exceed
    ``cap_tokens`` (the CHECK would refuse the first insert).
    """
    insert = sqlite.insert if is_sqlite(conn) else postgresql.insert
    statement = insert(daily_spend).values(
        key_id=key_id, day=day, spent_tokens=tokens, cap_tokens=cap_tokens
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[daily_spend.c.key_id, daily_spend.c.day],
        set_={
            "spent_tokens": daily_spend.c.spent_tokens + statement.excluded.spent_tokens,
            "cap_tokens": statement.excluded.cap_tokens,
        },
        where=daily_spend.c.spent_tokens + statement.excluded.spent_tokens
        <= statement.excluded.cap_tokens,
    ).returning(daily_spend.c.spent_tokens)
    spent = (await conn.execute(upsert)).scalar()
    return None if spent is None else int(spent)


async def spent_on(conn: AsyncConnection, *, key_id: int, day: date) -> int:
    """What the key has debited on ``day`` so far."""
    statement = select(daily_spend.c.spent_tokens).where(
        daily_spend.c.key_id == key_id, daily_spend.c.day == day
    )
    return int((await conn.execute(statement)).scalar() or 0)


async def lock_days(conn: AsyncConnection, *, day: date, caps: dict[int, int]) -> None:
    """Lock the day's counter rows of ``caps`` (key id -> cap), in key order, making
    any that is missing (PostgreSQL; SQLite has one writer).

    A batch takes them before any wallet, so that two batches never wait on each
    other's counter and wallet in opposite orders (a deadlock PostgreSQL would break by
    failing one of them).
    """
    if is_sqlite(conn) or not caps:
        return
    rows = [
        {"key_id": key_id, "day": day, "spent_tokens": 0, "cap_tokens": cap}
        for key_id, cap in sorted(caps.items())
    ]
    await conn.execute(postgresql.insert(daily_spend).on_conflict_do_nothing(), rows)
    statement = (
        select(daily_spend.c.key_id)
        .where(daily_spend.c.key_id.in_(sorted(caps)), daily_spend.c.day == day)
        .order_by(daily_spend.c.key_id)
        .with_for_update()
    )
    await conn.execute(statement)
