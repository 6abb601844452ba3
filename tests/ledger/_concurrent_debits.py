"""One process of the cross-process concurrency test (tests/ledger/test_concurrency.py).

Usage: ``python _concurrent_debits.py DATABASE_URL USER_ID COUNT MODE``
(MODE: ``group_commit`` or ``commit_each``)

The conversation with the parent, one JSON line each way at a time:

1. Opens its own TokenService on the shared database, warms its connection pool
   and prints ``{"ready": true}``.
2. Waits for a line on stdin: the parent sends it to every process at once, while
   it holds the database's write lock.
3. Fires COUNT concurrent ``debit(amount=1)`` calls and, once its writers hold
   their connections (all blocked behind the parent's lock: the batch writer with
   group commit, ``POOL_SIZE`` calls without), prints ``{"in_flight": n}``. The
   parent lets go of the lock when every process has.
4. Prints what happened: success count, refusal codes, the balances the successes
   left behind and their transaction ids.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from contextlib import AsyncExitStack, suppress
from typing import Any

from sqlalchemy import event

from tokenbank import TokenService
from tokenbank.config import Settings

POOL_SIZE = 20
IN_FLIGHT_TIMEOUT_S = 20.0


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def main(database_url: str, user_id: str, count: int, group_commit: bool) -> None:
    settings = Settings(db_pool_size=POOL_SIZE, group_commit=group_commit)
    writers = 1 if group_commit else POOL_SIZE
    async with TokenService(
        database_url, settings=settings, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        engine = await service.engine()
        async with AsyncExitStack() as stack:  # open the pool's connections now
            for _ in range(POOL_SIZE):
                await stack.enter_async_context(engine.connect())
        say({"ready": True})
        if not await asyncio.to_thread(sys.stdin.readline):
            raise SystemExit("stdin closed before the start signal")

        checked_out = 0
        enough = asyncio.Event()

        def checkout(*_: Any) -> None:
            nonlocal checked_out
            checked_out += 1
            if checked_out >= writers:
                enough.set()

        def checkin(*_: Any) -> None:
            nonlocal checked_out
            checked_out -= 1

        event.listen(engine.sync_engine.pool, "checkout", checkout)
        event.listen(engine.sync_engine.pool, "checkin", checkin)
        tasks = [asyncio.ensure_future(service.debit(user_id, amount=1)) for _ in range(count)]
        with suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), IN_FLIGHT_TIMEOUT_S)
        say({"in_flight": checked_out})
        results = await asyncio.gather(*tasks)

    successes = [r for r in results if r.success]
    say(
        {
            "successes": len(successes),
            "refusals": dict(Counter(str(r.error_code) for r in results if not r.success)),
            "balances": [r.new_balance for r in successes],
            "transaction_ids": [r.transaction_id for r in successes],
        }
    )


if __name__ == "__main__":
    url, user, n, mode = sys.argv[1:5]
    asyncio.run(main(url, user, int(n), mode == "group_commit"))
