"""Set up a fresh database for `make bench`, through tokenbank's own API.

The base (``--base``): the schema (what `tokenbank db upgrade` runs), an app with
every scope and its key (what `tokenbank apps create bench --scope read --scope
spend --scope refund --scope credit --scope admin` runs), a feature with a fixed
pricing rule, a plan, and the hot user ``bench-hot`` with a very large balance. The
users ``bench-{first}`` ... ``bench-{last - 1}``: large balances, on the plan.
The harness (bench/databases.py) runs the base with the first share of the users,
and once the base is there (the line ``{"schema": "ready", ...}``), other shares in
parallel processes.

No SQL: wallets are opened by ``TokenService.apply`` in batches (one transaction per
batch, each wallet's opening grant on the ledger), so the books are exactly what the
service writes and ``tokenbank audit`` passes. Prints one JSON line at the end.

Usage: python bench/populate.py --database-url URL [--base] [--first 0] [--last 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from tokenbank import TokenService
from tokenbank.apps.service import AppService
from tokenbank.config import Settings
from tokenbank.db.migrate import upgrade
from tokenbank.db.models import API_SCOPES
from tokenbank.ledger.operations import Credit, OpenWallet
from tokenbank.plans.service import PlanService

USER_PREFIX = "bench-"
HOT_USER = "bench-hot"
FEATURE_ID = "bench-feature"
PLAN_NAME = "bench-plan"
FEATURE_FIXED_TOKENS = 3  # what one token-process end charges (plan profit 0%)
START_BALANCE_TOKENS = 1_000_000_000
HOT_USER_BALANCE_TOKENS = 100_000_000_000
BATCH = 100
CONCURRENCY = 8  # transactions at once while filling


def user_id(number: int) -> str:
    return f"{USER_PREFIX}{number}"


async def populate(database_url: str, *, base: bool, first: int, last: int) -> dict[str, object]:
    started = time.monotonic()
    # Setup only: SQLite need not be durable while we fill it (ignored by PostgreSQL).
    settings = Settings(
        database_url=database_url, sqlite_synchronous="OFF", db_pool_size=CONCURRENCY
    )
    key = None
    async with TokenService(settings=settings, welcome_bonus_tokens=0, auto_migrate=False) as tb:
        engine = await tb.engine()
        plans = PlanService(engine)
        if base:
            await upgrade(engine)
            _, key = await AppService(engine).create_app("bench", scopes=API_SCOPES)
            await plans.create_feature(
                FEATURE_ID,
                name="Bench feature",
                rule={"type": "fixed", "tokens": FEATURE_FIXED_TOKENS},
            )
            await plans.create_plan(PLAN_NAME, profit_percent=0, features=[FEATURE_ID])
            await _open_wallets(tb, [HOT_USER], concurrency=1)
            topped = await tb.apply(
                [
                    Credit(
                        user_id=HOT_USER,
                        amount_tokens=HOT_USER_BALANCE_TOKENS,
                        operation_type="purchase",
                        description="bench: hot user",
                    )
                ]
            )
            if not topped[0].success:
                raise SystemExit(f"topping up the hot user failed: {topped[0].error}")
            await plans.set_user_plan(HOT_USER, PLAN_NAME)
            # The base is there: a server may start, other shares may fill in parallel.
            print(json.dumps({"schema": "ready", "key": key}), flush=True)

        ids = [user_id(n) for n in range(first, last)]
        # SQLite takes one writer at a time: queued transactions would wait on its lock.
        sqlite = engine.dialect.name == "sqlite"
        await _open_wallets(tb, ids, concurrency=1 if sqlite else CONCURRENCY)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for uid in ids:
            queue.put_nowait(uid)

        async def put_on_plan() -> None:  # one transaction per user: several at once
            while not queue.empty():
                await plans.set_user_plan(queue.get_nowait(), PLAN_NAME)

        await asyncio.gather(*(put_on_plan() for _ in range(2 if sqlite else CONCURRENCY)))
    return {
        "key": key,
        "users": len(ids),
        "seconds": round(time.monotonic() - started, 2),
    }


async def _open_wallets(tb: TokenService, ids: list[str], *, concurrency: int) -> None:
    """Open wallets with large balances, BATCH to a transaction, `concurrency` at once."""
    batches: asyncio.Queue[list[str]] = asyncio.Queue()
    for start in range(0, len(ids), BATCH):
        batches.put_nowait(ids[start : start + BATCH])

    async def work() -> None:
        while not batches.empty():
            operations = [
                OpenWallet(user_id=uid, welcome_bonus_tokens=START_BALANCE_TOKENS)
                for uid in batches.get_nowait()
            ]
            results = await tb.apply(operations)
            failed = [r for r in results if not r.success]
            if failed:
                raise SystemExit(f"opening wallets failed: {failed[0].error}")

    await asyncio.gather(*(work() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--base", action="store_true", help="schema, key, feature, plan, hot user")
    parser.add_argument("--first", type=int, default=0, help="first user number")
    parser.add_argument("--last", type=int, default=10_000, help="one past the last user number")
    arguments = parser.parse_args()
    result = asyncio.run(
        populate(
            arguments.database_url,
            base=arguments.base,
            first=arguments.first,
            last=arguments.last,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
