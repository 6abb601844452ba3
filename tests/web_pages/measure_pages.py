"""How fast the signed-in user's pages answer for a wallet with many entries.

    .venv/bin/python -m tests.web_pages.measure_pages [DATABASE_URL] [--entries N]

Without a URL, a SQLite file in a temporary folder. The database is migrated, then
alice gets N debits (default 100,000, in batches through the ledger's one write path)
spread over 90 days, with bob's as many beside them; each page is then asked for 15
times over ASGI and the first and the median times are printed. Not a test: it
takes about a minute to seed, and its times depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import upgrade
from tokenbank.ledger.operations import Debit
from tokenbank.web.auth import SESSION_COOKIE

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 90
BATCH = 500
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3", None]
TYPES = ["usage", "usage", "usage", "image_generation"]
PAGES = [
    "/tokens",
    "/tokens/history",
    "/tokens/history?page=100",
    "/tokens/history?type=image_generation",
    "/tokens/history?type=purchase",  # one row in 100,001: the whole index walked
    "/tokens/history?from=2026-01-05&to=2026-01-06",
    "/tokens/usage",
    "/settings/billing",
]
REPEATS = 15


async def seed(url: str, entries: int, clock: ManualClock) -> None:
    engine = create_engine(url, Settings())
    await upgrade(engine)
    await engine.dispose()
    async with TokenService(url, clock=clock, welcome_bonus_tokens=0, auto_migrate=False) as tokens:
        for user in ("alice", "bob"):
            await tokens.open_wallet(user)
            await tokens.credit(user, amount=10**12, operation_type="purchase")
        await tokens.set_operation_cost("image_generation", 1)
        step = timedelta(days=DAYS) / entries
        chosen = random.Random(1)
        for _ in range(0, entries, BATCH):
            batch: list[Debit] = []
            for _ in range(BATCH):
                model = chosen.choice(MODELS)
                batch.append(
                    Debit(
                        user_id="alice",
                        amount_tokens=chosen.randint(1, 500),
                        operation_type=chosen.choice(TYPES),
                        metadata={"model": model} if model else None,
                        description="work",
                    )
                )
                batch.append(Debit(user_id="bob", amount_tokens=3))
            assert all(result.success for result in await tokens.apply(batch))
            clock.advance(step * BATCH)


async def measure(url: str, clock: ManualClock) -> None:
    app = create_app(Settings(database_url=url, hold_sweep_interval_seconds=0), clock=clock)
    async with app.router.lifespan_context(app):
        services = app.state.services
        account = await services.accounts.create(
            "alice@example.com", "correct horse battery", user_id="alice"
        )
        session = await services.accounts.start_session(account)
        transport = httpx.ASGITransport(app=app)
        cookies = {SESSION_COOKIE: session.token}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tokenbank.test", cookies=cookies
        ) as client:
            for path in PAGES:
                times = []
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    answer = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert answer.status_code == 200, (path, answer.status_code)
                median = statistics.median(times[1:])
                print(f"{path:48} first {times[0]:6.1f} ms   median {median:6.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", nargs="?")
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(folder) / 'pages.db'}"
        clock = ManualClock(START)
        started = time.perf_counter()
        await seed(url, args.entries, clock)
        print(f"seeded {args.entries:,} entries in {time.perf_counter() - started:.0f} s")
        await measure(url, clock)


if __name__ == "__main__":
    asyncio.run(main())
