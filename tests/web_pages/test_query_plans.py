"""The pages' reads walk indexes that start with the wallet, whatever the wallet's
size: SQLite's plan for each statement they run, captured as they run it.

Without statistics SQLite once answered the history's join through
(wallet_id, id), walking every entry of the wallet for each transaction: 13 s for a
page of a 100,000-entry wallet. PostgreSQL plans by statistics, so its plans are
measured (tests/web_pages/measure_pages.py), not pinned here."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.plans import plans_of
from tokenbank import ManualClock, TokenService
from tokenbank.ledger.pages import HistoryFilters, UserPages


@pytest.fixture
async def sqlite_service(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[TokenService]:
    path = tmp_path / "plans.db"
    shutil.copyfile(sqlite_template, path)
    clock = ManualClock(datetime(2026, 1, 10, tzinfo=UTC))
    async with TokenService(
        f"sqlite+aiosqlite:///{path}", clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        await service.open_wallet("alice")
        await service.credit("alice", amount=100, operation_type="bonus")
        await service.debit("alice", amount=1, metadata={"model": "gpt-4o"})
        yield service


FILTERS = [
    HistoryFilters(),
    HistoryFilters(operation_type="usage"),
    HistoryFilters(first_day=date(2026, 1, 1), last_day=date(2026, 1, 9)),
]


@pytest.mark.parametrize("filters", FILTERS)
async def test_the_history_page_and_export_use_the_wallets_indexes(
    sqlite_service: TokenService, filters: HistoryFilters
) -> None:
    pages = UserPages(sqlite_service)

    async def page() -> None:
        await pages.history("alice", filters, limit=51, offset=50)

    async def export() -> None:
        async for _ in pages.history_chunks("alice", filters, chunk=1):
            pass

    for plan in await plans_of(sqlite_service, page) + await plans_of(sqlite_service, export):
        assert_indexed(plan)
        assert_walked_in_order(plan)


async def test_usage_and_the_polled_figures_use_the_wallets_indexes(
    sqlite_service: TokenService,
) -> None:
    pages = UserPages(sqlite_service)

    async def usage() -> None:
        await pages.usage("alice", 30)

    async def figures() -> None:
        await pages.figures("alice")

    for plan in await plans_of(sqlite_service, usage):
        assert_indexed(plan)
    [polled] = await plans_of(sqlite_service, figures)
    assert "SEARCH wallets USING INDEX" in polled


# How a plan line may reach each ledger table: by a key, or by an index that starts
# with the wallet.
ALLOWED_SEARCHES = {
    "ledger_transactions": (
        "USING INDEX ix_ledger_transactions_wallet_created (wallet_id=?",
        "USING INDEX sqlite_autoindex_ledger_transactions_1 (id=?)",  # by its key
    ),
    "ledger_entries": (
        "USING INDEX ix_ledger_entries_transaction_id (transaction_id=?)",
        # The wallet's entries in id order: the history walks them down and stops at
        # its page; the usage reads those after a mark (UserPages._kept_usage).
        "USING INDEX ix_ledger_entries_wallet_id (wallet_id=?",
        "USING COVERING INDEX ix_ledger_entries_wallet_id (wallet_id=?",
        "USING INTEGER PRIMARY KEY (rowid=?)",  # a page's entries, by their ids
    ),
}


def assert_indexed(plan: str) -> None:
    for line in plan.splitlines():
        assert "SCAN ledger_" not in line, plan
        for table, searches in ALLOWED_SEARCHES.items():
            if f" {table} " in line:
                assert any(search in line for search in searches), plan


def assert_walked_in_order(plan: str) -> None:
    """A history page is read in its order from the index: sorting it would read all
    of the wallet's entries for every page."""
    assert "TEMP B-TREE FOR ORDER BY" not in plan, plan


async def test_the_check_sees_a_scan(sqlite_service: TokenService) -> None:
    # A positive control: a plan that scans the entries fails the check.
    async with (await sqlite_service.engine()).connect() as conn:
        rows = await conn.execute(text("EXPLAIN QUERY PLAN SELECT * FROM ledger_entries"))
        plan = "\n".join(str(row[-1]) for row in rows)
    with pytest.raises(AssertionError):
        assert_indexed(plan)
