"""Per-key limits hold across processes (issue 14): two apps over one PostgreSQL.

Each app is what one ``tokenbank serve`` process holds (its own engine and pool, its
own group commit, its own rate-limit allowances); many requests race through both.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import _create_pg_database
from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings
from tokenbank.db.engine import read_transaction
from tokenbank.db.models import API_SCOPES
from tokenbank.ledger.repository.spend_caps import daily_spend
from tokenbank.testing.postgres import PostgresServer

DEDUCT = "/api/tokens/deduct"
_numbers = itertools.count()


class Instance:
    def __init__(self, client: httpx.AsyncClient, services: Services) -> None:
        self.client = client
        self.services = services


@pytest.fixture
async def instances(
    postgres_server: PostgresServer, clock: ManualClock
) -> AsyncIterator[list[Instance]]:
    """Two apps ("processes") over one fresh PostgreSQL database."""
    name = f"shared_limits_{next(_numbers)}"
    await _create_pg_database(postgres_server, name)
    url = postgres_server.async_url(name)
    settings = Settings(database_url=url, welcome_bonus_tokens=0, hold_sweep_interval_seconds=0)
    async with AsyncExitStack() as stack:
        found = []
        for _ in range(2):
            service = TokenService(url, settings=settings, clock=clock, auto_migrate=False)
            stack.push_async_callback(service.close)
            app = create_app(settings, token_service=service, clock=clock)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test")
            await stack.enter_async_context(client)
            found.append(Instance(client, app.state.services))
        yield found


async def funded_key(instances: list[Instance], **limits: Any) -> str:
    services = instances[0].services
    _, key = await services.apps.create_app("shared", scopes=list(API_SCOPES), limits=limits)
    for user in ("u1", "u2", "u3"):
        await services.tokens.open_wallet(user)
        await services.tokens.credit(user, amount=100_000, operation_type="admin_grant")
    return key


async def race(instances: list[Instance], key: str, amounts: list[int]) -> list[httpx.Response]:
    """Every deduct at once, alternating between the apps and over three wallets."""
    headers = {"Authorization": f"Bearer {key}"}
    calls = [
        instances[n % 2].client.post(
            DEDUCT, json={"userId": f"u{n % 3 + 1}", "amount": amount}, headers=headers
        )
        for n, amount in enumerate(amounts)
    ]
    return list(await asyncio.gather(*calls))


async def usage_debited(services: Services) -> int:
    total = 0
    for user in ("u1", "u2", "u3"):
        entries = await services.tokens.get_ledger().get_user_entries(
            user, operation_type="usage", limit=500
        )
        total += -sum(entry.tokens_amount for entry in entries)
    return total


async def test_concurrent_deducts_never_pass_the_daily_cap(instances: list[Instance]) -> None:
    key = await funded_key(instances, daily_spend_cap_tokens=100)

    answers = await race(instances, key, [7] * 60)

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {200: 14, 402: 46}  # 14 * 7 = 98; a 15th would make 105
    assert {a.json()["code"] for a in answers if a.status_code == 402} == {
        "daily_spend_cap_exceeded"
    }
    assert await usage_debited(instances[1].services) == 98
    async with read_transaction(await instances[0].services.tokens.engine()) as conn:
        counted = (await conn.execute(select(func.sum(daily_spend.c.spent_tokens)))).scalar()
    assert counted == 98
    assert (await instances[0].services.tokens.audit()).ok


async def test_mixed_amounts_fill_the_cap_and_never_pass_it(instances: list[Instance]) -> None:
    key = await funded_key(instances, daily_spend_cap_tokens=500)
    amounts = [n % 9 + 1 for n in range(200)]  # 1,000 tokens asked of a 500 cap

    answers = await race(instances, key, amounts)

    granted = sum(a for a, answer in zip(amounts, answers, strict=True) if answer.is_success)
    assert await usage_debited(instances[0].services) == granted
    # Never past the cap; and refused only when what was asked did not fit.
    assert 500 - 9 < granted <= 500


async def test_two_processes_share_one_rate_limit(instances: list[Instance]) -> None:
    key = await funded_key(instances, rate_limit_per_minute=10)

    answers = await race(instances, key, [1] * 40)

    assert Counter(answer.status_code for answer in answers) == {200: 10, 429: 30}
    assert await usage_debited(instances[0].services) == 10
    served_by = Counter(n % 2 for n, answer in enumerate(answers) if answer.is_success)
    assert sum(served_by.values()) == 10


async def test_a_large_rate_limit_is_claimed_in_lots_and_never_passed(
    instances: list[Instance],
) -> None:
    key = await funded_key(instances, rate_limit_per_minute=100)  # lots of 5

    answers = await race(instances, key, [1] * 300)

    served = sum(answer.is_success for answer in answers)
    # At most one lot may be left unused by the process whose requests ran out first.
    assert 95 <= served <= 100
    assert await usage_debited(instances[0].services) == served
