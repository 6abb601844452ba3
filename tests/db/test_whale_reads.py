"""A wallet's entries are read a page at a time however many the wallet has among
how many other wallets: each page walks (wallet_id, id) down from the newest entry
and stops, on both engines, with statistics that describe the ledger.

PostgreSQL estimates the entries of a wallet it has not looked up yet at the average
wallet's. Joined through ``wallets.user_id``, the first page of a wallet of 40,000
entries among 10,000 wallets was a sort of all 40,000 (240 ms, the admin's account
page); the history's page 200 joined and sorted all of them (118 ms).
"""

from __future__ import annotations

from sqlalchemy import text

from tests.support.plans import plans_of
from tokenbank import TokenService
from tokenbank.ledger.operations import Credit, Debit, OpenWallet, Operation
from tokenbank.ledger.pages import HistoryFilters, UserPages

SMALL_WALLETS = 300
WHALE = "whale"
WHALE_DEBITS = 1_500
BATCH = 250


async def _fill(service: TokenService) -> None:
    """Wallets of one credit each, and a whale with many debits."""
    small: list[Operation] = []
    for number in range(SMALL_WALLETS):
        user = f"small-{number}"
        small += [OpenWallet(user_id=user), Credit(user_id=user, amount_tokens=10)]
    await service.apply(small)
    await service.apply(
        [OpenWallet(user_id=WHALE), Credit(user_id=WHALE, amount_tokens=WHALE_DEBITS)]
    )
    for _ in range(WHALE_DEBITS // BATCH):
        results = await service.apply([Debit(user_id=WHALE, amount_tokens=1)] * BATCH)
        assert all(result.success for result in results)
    engine = await service.engine()
    async with engine.begin() as conn:  # statistics that know the whale
        await conn.execute(text("ANALYZE"))


WALKS = (
    "Index Scan Backward using ix_ledger_entries_wallet_id",
    "Index Only Scan Backward using ix_ledger_entries_wallet_id",
    "ix_ledger_entries_wallet_id (wallet_id=?)",  # SQLite walks an index in its order
)


def _assert_walks_the_wallet_in_order(plan: str) -> None:
    assert any(walk in plan for walk in WALKS), plan
    assert "SCAN ledger_" not in plan, plan  # SQLite reads no ledger table whole
    assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
    assert "Seq Scan on ledger_transactions" not in plan, plan


async def test_the_first_page_of_a_whales_entries_walks_its_index(service: TokenService) -> None:
    await _fill(service)

    async def first_page() -> None:
        entries = await service.get_ledger().get_user_entries(WHALE, limit=26, offset=0)
        assert len(entries) == 26

    [plan] = await plans_of(service, first_page, naming="ledger_entries")
    _assert_walks_the_wallet_in_order(plan)
    assert "Sort" not in plan, plan


async def test_a_deep_history_page_skips_index_entries_not_joined_rows(
    service: TokenService,
) -> None:
    await _fill(service)
    pages = UserPages(service)

    async def deep_page() -> None:
        rows = await pages.history(WHALE, HistoryFilters(), limit=51, offset=1_000)
        assert rows is not None and len(rows) == 51

    [plan] = await plans_of(service, deep_page, naming="ledger_entries")
    # The walk picks the page's ids in order; then only those 51 are joined (and
    # sorted). How PostgreSQL fetches those rows is its choice by the table's size.
    _assert_walks_the_wallet_in_order(plan)
