"""How long the admin pages take over a big ledger (not a test: run it by hand).

    .venv/bin/python -m tests.web_admin.measure_dashboard [--entries 100000] [--postgresql]

Builds a migrated database (SQLite in a temporary folder, or a throwaway PostgreSQL),
fills it through the ledger's batch path (credits, then debits: each transaction writes
two entries; a third of the debits carry a per-unit pricing record, the others a model
in their metadata), spread over 40 days, then times GET /admin/tokens (the first visit
adds up the whole ledger, the next ones only what is new: web/admin_reads.py) and the
accounts pages over ASGI, signed in as an admin.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.web_admin.conftest import PASSWORD, PER_UNIT_PRICING
from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import upgrade
from tokenbank.ledger.operations import Credit, Debit, Operation
from tokenbank.testing.postgres import PostgresServer

WALLETS = 1_000
BATCH = 1_000
ROUNDS = 20


def _debit(number: int) -> Debit:
    user_id = f"user-{number % WALLETS:04d}"
    if number % 3 == 0:
        return Debit(user_id=user_id, amount_tokens=1_500, pricing=PER_UNIT_PRICING)
    model = ("gpt-4o", "claude-3", "gemini")[number % 3]
    return Debit(user_id=user_id, amount_tokens=10 + number % 90, metadata={"model": model})


async def _fill(services: Services, clock: ManualClock, entries: int) -> None:
    tokens = services.tokens
    for number in range(WALLETS):
        await tokens.open_wallet(f"user-{number:04d}")
    credits: list[Operation] = [
        Credit(user_id=f"user-{n:04d}", amount_tokens=10_000_000, operation_type="purchase")
        for n in range(WALLETS)
    ]
    await tokens.apply(credits)
    debits = entries // 2 - WALLETS
    for start in range(0, debits, BATCH):
        # Spread over 40 days, so the chart's 30 days filter some out.
        clock.advance(40 * 86_400 * BATCH / debits)
        await tokens.apply([_debit(n) for n in range(start, min(start + BATCH, debits))])


async def _time(client: httpx.AsyncClient, path: str) -> list[float]:
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        answer = await client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text[:300]
    return timings


async def main(entries: int, postgresql: bool) -> None:
    if postgresql:
        with PostgresServer() as server:
            server.create_database("measure")
            await measure(server.async_url("measure"), entries)
        return
    folder = Path(tempfile.mkdtemp(prefix="tokenbank-measure-"))
    await measure(f"sqlite+aiosqlite:///{folder / 'tokenbank.db'}", entries)


async def measure(url: str, entries: int) -> None:
    settings = Settings(database_url=url, welcome_bonus_tokens=0, hold_sweep_interval_seconds=0)
    engine = create_engine(url, settings)
    await upgrade(engine)
    await engine.dispose()
    clock = ManualClock()
    service = TokenService(url, settings=settings, clock=clock, auto_migrate=False)
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        started = time.perf_counter()
        await _fill(services, clock, entries)
        print(f"filled {entries:,} entries in {time.perf_counter() - started:.1f} s")
        await services.accounts.create("admin@example.com", PASSWORD, role="admin")
        session = await services.accounts.start_session(
            await services.accounts.get("admin@example.com")
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://measure") as client:
            client.cookies.set("tb_session", session.token)
            for path in (
                "/admin/tokens",
                "/admin/accounts?min_balance=9000000&page=3",
                "/admin/accounts?q=user-09",
                "/admin/accounts/user-0001",
            ):
                timings = await _time(client, path)
                print(
                    f"{path}: first {timings[0]:.1f} ms, then median"
                    f" {statistics.median(timings[1:]):.1f} ms, max {max(timings[1:]):.1f} ms"
                    f" over {ROUNDS - 1}"
                )
    await service.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--postgresql", action="store_true")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.entries, arguments.postgresql))
