"""One process of the cross-process concurrency test (tests/ledger/test_concurrency.py).

Usage: ``python _concurrent_debits.py DATABASE_URL USER_ID COUNT``

Opens its own TokenService on the shared database, warms its connection pool,
prints ``{"ready": true}``, waits for a line on stdin (the parent sends it to
every process once all are ready, so they start at the same moment), then fires
COUNT concurrent ``debit(amount=1)`` calls and prints one JSON line with what
happened: success count, refusal codes, the balances the successes left behind,
and when the burst started and finished (wall clock, to prove the processes
overlapped).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

from tokenbank import TokenService
from tokenbank.config import Settings

POOL_SIZE = 20


async def main(database_url: str, user_id: str, count: int) -> None:
    settings = Settings(db_pool_size=POOL_SIZE)
    async with TokenService(
        database_url, settings=settings, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        # Open the pool's connections now, so the burst does not wait on connects.
        await asyncio.gather(*(service.get_balance(user_id) for _ in range(POOL_SIZE)))
        print(json.dumps({"ready": True}), flush=True)
        if not await asyncio.to_thread(sys.stdin.readline):
            raise SystemExit("stdin closed before the start signal")
        started = time.time()
        results = await asyncio.gather(*(service.debit(user_id, amount=1) for _ in range(count)))
        finished = time.time()
    successes = [r for r in results if r.success]
    report = {
        "successes": len(successes),
        "refusals": dict(Counter(str(r.error_code) for r in results if not r.success)),
        "balances": sorted(r.new_balance for r in successes if r.new_balance is not None),
        "transaction_ids": [r.transaction_id for r in successes],
        "started": started,
        "finished": finished,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    url, user, n = sys.argv[1:4]
    asyncio.run(main(url, user, int(n)))
