"""TOKENBANK_READ_DATABASE_URL against a real streaming standby the suite starts.

History, usage and the admin dashboard read from the replica and say how old their
figures are while it lags; balances, deducts, holds and idempotency decide on the
primary, even when the replica is paused and shows more tokens than there are.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import event

from tests.replica.conftest import Replicated
from tokenbank import TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.clock import Clock, ManualClock, system_clock
from tokenbank.config import Settings
from tokenbank.db.reads import Freshness, ReadHandle
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.pages import HistoryFilters, UserPages
from tokenbank.web.auth import SESSION_COOKIE

BASE_URL = "http://tokenbank.test"
# Short, so that a paused replica soon counts as behind; long enough that WAL the
# primary writes between a catch-up and a page (a session's touch) does not.
LAG_TOLERANCE_SECONDS = 1.0
API_KEY = "tb_replica_test_key_0123456789abcdef"
BEHIND = re.compile(r"Figures as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@dataclass
class Site:
    app: FastAPI
    services: Services
    alice: httpx.AsyncClient

    @property
    def tokens(self) -> TokenService:
        return self.services.tokens


@asynccontextmanager
async def site_over(replica: Replicated, clock: Clock = system_clock) -> AsyncIterator[Site]:
    """The app on the primary, its history on the replica, alice signed in with 100 tokens."""
    settings = Settings(
        database_url=replica.primary_url,
        read_database_url=replica.replica_url,
        welcome_bonus_tokens=0,
        hold_sweep_interval_seconds=0,
        read_lag_tolerance_seconds=LAG_TOLERANCE_SECONDS,
        api_key=SecretStr(API_KEY),
        public_url=BASE_URL,
    )
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        await services.tokens.open_wallet("alice")
        await services.tokens.credit("alice", amount=100, operation_type="purchase")
        account = await services.accounts.create(
            "alice@example.com", "a long password", user_id="alice"
        )
        session = await services.accounts.start_session(account)
        transport = httpx.ASGITransport(app=app)
        cookies = {SESSION_COOKIE: session.token}
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, cookies=cookies
        ) as alice:
            yield Site(app, services, alice)
        assert (await services.tokens.audit()).ok


def balances_after(html: str) -> list[str]:
    """The history table's "balance after" column, newest first."""
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[4].strip() for row in rows]


@asynccontextmanager
async def statements_on(engine: Any) -> AsyncIterator[list[str]]:
    """Every statement the engine sends while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_deduct_shows_on_the_primary_at_once_and_in_the_history_once_replayed(
    replica: Replicated,
) -> None:
    async with site_over(replica) as site:
        replica.catch_up()
        reads = await site.tokens.reads()
        assert reads.is_replica
        assert reads.engine is not await site.tokens.engine()

        deducted = await site.tokens.debit("alice", amount=30)
        assert deducted.success and deducted.new_balance == 70
        balance = await site.tokens.get_balance("alice")
        assert balance is not None and balance.tokens_balance == 70  # the primary: at once

        replica.catch_up()
        page = await site.alice.get("/tokens/history")
        assert page.status_code == 200
        assert balances_after(page.text) == ["70", "100"]
        assert 'id="freshness"' not in page.text  # caught up: nothing to say
        assert await reads.freshness() == Freshness(behind=False)


async def test_a_lagging_replica_shows_older_figures_and_says_so(replica: Replicated) -> None:
    async with site_over(replica) as site:
        replica.catch_up()
        replica.pause()
        assert (await site.tokens.debit("alice", amount=30)).success
        # The replica received the deduct's WAL and has not replayed it.
        await _until_behind(site)

        page = await site.alice.get("/tokens/history")
        assert page.status_code == 200
        assert balances_after(page.text) == ["100"]  # the older data...
        assert BEHIND.search(page.text), page.text  # ...and how old it is
        usage = await site.alice.get("/tokens/usage")
        assert usage.status_code == 200 and BEHIND.search(usage.text)
        csv = await site.alice.get("/tokens/history.csv")
        assert csv.text.count("\r\n") == 2  # the header and the purchase

        replica.resume()
        replica.catch_up()
        page = await site.alice.get("/tokens/history")
        assert balances_after(page.text) == ["70", "100"]
        assert not BEHIND.search(page.text)


async def _until_behind(site: Site) -> Freshness:
    reads = await site.tokens.reads()
    for _ in range(500):
        freshness = await reads.freshness()
        if freshness.behind:
            assert freshness.as_of is not None
            return freshness
        await asyncio.sleep(0.02)
    raise AssertionError("the paused replica never reported itself behind")


async def test_money_decides_on_the_primary_while_the_replica_shows_more(
    replica: Replicated,
) -> None:
    async with site_over(replica) as site:
        replica.catch_up()
        replica.pause()
        tokens = site.tokens
        assert (await tokens.debit("alice", amount=80, idempotency_key="k-1")).success
        await _until_behind(site)
        # The replica still says 100 (its history's last balance); the primary says 20.
        page = await site.alice.get("/tokens/history")
        assert balances_after(page.text) == ["100"]

        refused = await tokens.debit("alice", amount=50)
        assert not refused.success
        assert refused.error_code == ErrorCode.INSUFFICIENT_TOKENS
        assert refused.available_tokens == 20
        hold = await tokens.hold("alice", amount=50)
        assert not hold.success and hold.error_code == ErrorCode.INSUFFICIENT_TOKENS
        again = await tokens.debit("alice", amount=80, idempotency_key="k-1")
        assert again.success and again.replayed and again.new_balance == 20
        live = await site.alice.get("/tokens")
        assert live.status_code == 200 and "20" in live.text
        balance = await tokens.get_balance("alice")
        assert balance is not None and balance.tokens_balance == 20


async def test_nothing_that_decides_money_reads_the_replica(replica: Replicated) -> None:
    async with site_over(replica) as site:
        tokens = site.tokens
        reads = await tokens.reads()
        await tokens.set_operation_cost("chat", 5)
        replica.catch_up()
        replica.pause()
        async with statements_on(reads.engine) as on_replica:
            assert (await tokens.debit("alice", amount=10, idempotency_key="d-1")).success
            assert (await tokens.debit("alice", amount=10, idempotency_key="d-1")).replayed
            held = await tokens.hold("alice", amount=20)
            assert held.success and held.hold_id is not None
            assert (await tokens.capture(held.hold_id, amount=5)).success
            assert (await tokens.credit("alice", amount=7, idempotency_key="c-1")).success
            assert (await tokens.can_afford("alice", "chat")).can_afford
            balance = await tokens.get_balance("alice")
            assert balance is not None and balance.tokens_balance == 92
            assert (await site.alice.get("/tokens")).status_code == 200
        assert on_replica == []
        # ...while history does read it (the probe above would have seen it).
        async with statements_on(reads.engine) as on_replica:
            assert (await site.alice.get("/tokens/history")).status_code == 200
        assert on_replica


async def test_a_wallet_not_replicated_yet_has_an_empty_history(replica: Replicated) -> None:
    async with site_over(replica) as site:
        replica.catch_up()
        replica.pause()
        await site.tokens.open_wallet("carol")
        await site.tokens.credit("carol", amount=5)
        await _until_behind(site)
        reader = UserPages(site.tokens)
        assert await reader.history("carol", HistoryFilters(), limit=10, offset=0) == []
        assert await reader.usage("carol", 30) == []
        assert await reader.history("nobody", HistoryFilters(), limit=10, offset=0) is None


@pytest.mark.parametrize("path", ["/admin/tokens", "/admin/accounts", "/admin/accounts/alice"])
async def test_admin_pages_read_the_replica_and_say_when_it_lags(
    replica: Replicated, path: str
) -> None:
    async with site_over(replica) as site:
        accounts = site.services.accounts
        admin = await accounts.create("root@example.com", "a long password", role="superadmin")
        session = await accounts.start_session(admin)
        transport = httpx.ASGITransport(app=site.app)
        cookies = {SESSION_COOKIE: session.token}
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, cookies=cookies
        ) as root:
            replica.catch_up()
            current = await root.get(path)
            assert current.status_code == 200 and not BEHIND.search(current.text)
            replica.pause()
            await site.tokens.debit("alice", amount=1)
            await _until_behind(site)
            behind = await root.get(path)
            assert behind.status_code == 200 and BEHIND.search(behind.text), behind.text


async def test_lag_within_the_tolerance_counts_as_current(replica: Replicated) -> None:
    async with site_over(replica) as site:
        replica.catch_up()
        replica.pause()
        assert (await site.tokens.debit("alice", amount=1)).success
        await _until_behind(site)  # beyond 1 s: behind...
        primary = await site.tokens.engine()
        replica_engine = (await site.tokens.reads()).engine
        patient = ReadHandle(primary, replica_engine, lag_tolerance_seconds=3_600)
        assert await patient.freshness() == Freshness(behind=False)  # ...within an hour: not
        assert await ReadHandle(primary).freshness() == Freshness(behind=False)


async def test_the_history_api_reads_the_replica_and_the_balance_the_primary(
    replica: Replicated,
) -> None:
    async with site_over(replica) as site:
        transport = httpx.ASGITransport(app=site.app)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=headers
        ) as api:
            replica.catch_up()
            replica.pause()
            deducted = await api.post("/api/tokens/deduct", json={"userId": "alice", "amount": 30})
            assert deducted.status_code == 200, deducted.text
            await _until_behind(site)

            balance = await api.get("/api/tokens/balance/alice")
            ledger = await api.get("/api/tokens/ledger/alice")
            stats = await api.get("/api/tokens/stats/alice")
            assert balance.json()["data"]["balance"] == 70  # the primary
            assert [e["balanceAfter"] for e in ledger.json()["data"]["entries"]] == [100]
            assert stats.json()["data"]["totalSpent"] == 0  # the replica has no deduct yet

            replica.resume()
            replica.catch_up()
            ledger = await api.get("/api/tokens/ledger/alice")
            assert [e["balanceAfter"] for e in ledger.json()["data"]["entries"]] == [70, 100]


async def test_usage_read_while_behind_catches_up_with_the_replica(replica: Replicated) -> None:
    """A process keeps what a wallet's settled entries add up to; a lagging replica may
    still lack some of them, so what it answered while behind must not stick once it
    has caught up (here: a debit of a day that has ended)."""
    clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    async with site_over(replica, clock) as site:
        pages = UserPages(site.tokens)
        replica.catch_up()
        replica.pause()
        assert (await site.tokens.debit("alice", amount=30)).success  # on 2026-03-01
        clock.advance(timedelta(days=1))  # 2026-03-01 is a finished day now
        await _until_behind(site)
        behind = await pages.usage("alice", 30)
        assert behind is not None and sum(row.tokens for row in behind) == 0

        replica.resume()
        replica.catch_up()
        current = await pages.usage("alice", 30)
        assert current is not None
        assert [(row.day, row.tokens) for row in current] == [("2026-03-01", 30)]


async def test_a_read_url_that_is_not_a_database_fails_at_start(tmp_path: Path) -> None:
    service = TokenService(
        f"sqlite+aiosqlite:///{tmp_path / 'tokenbank.db'}", read_database_url="mysql://replica/db"
    )
    with pytest.raises(ValueError, match="unsupported database URL"):
        await service.engine()
    await service.close()


async def test_without_a_read_url_history_reads_the_primary(tmp_path: Path) -> None:
    async with TokenService(f"sqlite+aiosqlite:///{tmp_path / 'tokenbank.db'}") as service:
        reads = await service.reads()
        assert not reads.is_replica
        assert reads.engine is await service.engine()
        assert await reads.freshness() == Freshness(behind=False)
