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
