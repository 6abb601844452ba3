"""What the admin pages read: the dashboard's figures (the billing defaults' admin statistics) in
one snapshot, the wallets list a page at a time, one wallet with its owner.

Each figure is an aggregate the database computes (``ledger/repository/admin_stats.py``
over the ledger, ``payments/repository.py`` over purchases, recharges and Stripe
events); this module only adds, divides and names them. What tokenbank does not record
is said so (``None``), never estimated.

The ledger's all-time totals, its usage by operation and model (a join and JSON reads
per debit: about 80 ms per 50,000 debits, on SQLite and PostgreSQL alike) and its
tokens by day are too slow to add up whole on every visit. The ledger is append-only
(decision 2), so what its entries up to some id add up to never changes: each process
keeps that sum for the entries written more than SETTLE_SECONDS ago and asks the
database only for the newer ones. The kept sum also keeps how many entries it covers;
when the database counts more (a transaction that took an id before the mark committed
after it was read), the sum is made again from the start. The figures are therefore
always exact, and fresh to the request; only a process's first visit adds up the
whole ledger.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.db.engine import read_transaction
from tokenbank.db.rows import AnyRow
from tokenbank.ledger.accounts import (
    TOKENS_CLAWED_BACK,
    TOKENS_CONSUMED,
    TOKENS_EXPIRED,
    TOKENS_GRANTED,
    TOKENS_SOLD,
)
from tokenbank.ledger.repository import admin_stats
from tokenbank.ledger.repository.admin_stats import WalletFilter
from tokenbank.payments import repository as payments_repo
from tokenbank.plans import repository as plans_repo

CHART_DAYS = 30
NO_MODEL_LABEL = "(no model recorded)"
# Entries older than this are summed once per process and kept (the module docstring).
SETTLE_SECONDS = 5

Key = TypeVar("Key")


@dataclass(frozen=True, slots=True)
class Revenue:
    """Paid purchases in one currency. A subscription's later invoices renew its plan
    without a purchase row, so only its first checkout is counted."""

    currency: str
    purchases: int
    buyers: int
    cents: int
    refunded_cents: int
    recent: int  # paid in the last CHART_DAYS days

    @property
    def net_cents(self) -> int:
        return self.cents - self.refunded_cents

    @property
    def average_cents(self) -> int:
        return self.cents // self.purchases if self.purchases else 0

    @property
    def per_buyer(self) -> str:
        return f"{self.purchases / self.buyers:.2f}" if self.buyers else "-"


@dataclass(frozen=True, slots=True)
class UsageRow:
    name: str
    tokens: int
    actual: int
    operations: int


@dataclass(frozen=True, slots=True)
class DayFlow:
    day: str
    used: int
    purchased: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    tokens_used: int
    tokens_refunded: int
    actual_tokens: int
    tokens_sold: int
    tokens_granted: int
    tokens_expired: int
    tokens_clawed_back: int
    revenue: list[Revenue]
    wallets: AnyRow
    recharges: dict[str, int]
    events: dict[str, int]
    by_operation: list[UsageRow]
    by_model: list[UsageRow]
    days: list[DayFlow]

    @property
    def profit_margin(self) -> str | None:
        """(billable - actual) / billable, in percent: 1.5 tokens billed per actual
        token is a 33.3% margin."""
        if not self.tokens_used:
            return None
        return percent(Decimal(self.tokens_used - self.actual_tokens) / self.tokens_used)

    @property
    def recharge_success(self) -> str | None:
        """Recharges that succeeded among those that finished (queued and processing
        ones are not counted yet)."""
        done = self.recharges.get("succeeded", 0) + self.recharges.get("failed", 0)
        return percent(Decimal(self.recharges.get("succeeded", 0)) / done) if done else None

    @property
    def recharges_in_flight(self) -> int:
        return self.recharges.get("queued", 0) + self.recharges.get("processing", 0)

    @property
    def events_taken(self) -> int:
        return sum(self.events.values())

    @property
    def average_balance(self) -> int:
        value = self.wallets.average_balance
        return 0 if value is None else round(Decimal(value))


def percent(ratio: Decimal) -> str:
    return f"{ratio * 100:.1f}%"


def _grouped(usage: dict[tuple[str, str], list[int]], position: int) -> list[UsageRow]:
    """The (operation type, model) sums summed by one of the two, biggest first."""
    totals: dict[str, list[int]] = {}
    for key, figures in usage.items():
        name = key[position] or NO_MODEL_LABEL
        total = totals.setdefault(name, [0, 0, 0])
        for index, value in enumerate(figures):
            total[index] += value
    ordered = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))
    return [UsageRow(name, *figures) for name, figures in ordered]


# --- the ledger's all-time sums, kept per process (the module docstring) ---------------------


@dataclass
class LedgerSums:
    """What the entries with ids up to ``upto_id`` add up to, and how many they are."""

    upto_id: int = 0
    entries: int = 0
    # system account -> [positive sum, negative sum]
    flows: dict[str, list[int]] = field(default_factory=dict)
    # (operation type, model) -> [tokens billed, actual tokens, operations]
    usage: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # UTC day 'YYYY-MM-DD' -> [tokens used, tokens purchased]
    days: dict[str, list[int]] = field(default_factory=dict)

    def plus(self, other: LedgerSums) -> LedgerSums:
        """These sums and those of the entries after them (``other``)."""
        return LedgerSums(
            upto_id=other.upto_id,
            entries=self.entries + other.entries,
            flows=_added(self.flows, other.flows),
            usage=_added(self.usage, other.usage),
            days=_added(self.days, other.days),
        )


def _added(left: dict[Key, list[int]], right: dict[Key, list[int]]) -> dict[Key, list[int]]:
    total = {key: list(figures) for key, figures in left.items()}
    for key, figures in right.items():
        into = total.setdefault(key, [0] * len(figures))
        for index, value in enumerate(figures):
            into[index] += value
    return total


_kept: weakref.WeakKeyDictionary[AsyncEngine, LedgerSums] = weakref.WeakKeyDictionary()


async def _sums_between(
    conn: AsyncConnection, after_id: int, upto_id: int | None, entries: int
) -> LedgerSums:
    flows = await admin_stats.system_flows(conn, after_id=after_id, upto_id=upto_id)
    usage = await admin_stats.usage_breakdown(conn, after_id=after_id, upto_id=upto_id)
    days = await admin_stats.daily_flow(conn, after_id=after_id, upto_id=upto_id)
    return LedgerSums(
        upto_id=after_id if upto_id is None else upto_id,
        entries=entries,
        flows={name: [flow.positive, flow.negative] for name, flow in flows.items()},
        usage={
            (row.operation_type, row.model): [int(row.tokens), int(row.actual), int(row.operations)]
            for row in usage
        },
        days={row.day: [int(row.used), int(row.purchased)] for row in days},
    )


async def ledger_sums(conn: AsyncConnection, engine: AsyncEngine, now: datetime) -> LedgerSums:
    """Every entry's sums: the kept ones, those settled since (kept from now on), and
    the newest."""
    kept = _kept.get(engine)
    if kept is None or await admin_stats.entry_count(conn, kept.upto_id) != kept.entries:
        kept = LedgerSums()
    mark = await admin_stats.settled_mark(
        conn, kept.upto_id, now - timedelta(seconds=SETTLE_SECONDS)
    )
    if mark > kept.upto_id:
        # Counted before it is summed: an entry that commits in between is in the sum
        # and not in the count, so the next visit sees a difference and starts again.
        count = await admin_stats.entry_count(conn, mark) - kept.entries
        kept = kept.plus(await _sums_between(conn, kept.upto_id, mark, count))
        _kept[engine] = kept
    return kept.plus(await _sums_between(conn, mark, None, 0))


def _days(sums: dict[str, list[int]], today: date) -> list[DayFlow]:
    """Every one of the last CHART_DAYS days, with zeros where nothing moved."""
    days = []
    for back in range(CHART_DAYS - 1, -1, -1):
        day = (today - timedelta(days=back)).isoformat()
        used, bought = sums.get(day, (0, 0))
        days.append(DayFlow(day, used, bought))
    return days


async def _payments(conn: AsyncConnection, since: datetime) -> dict[str, Any]:
    totals = await payments_repo.paid_purchase_totals(conn, since)
    return {
        "revenue": [
            Revenue(
                row.currency,
                int(row.purchases),
                int(row.buyers),
                int(row.cents),
                int(row.refunded_cents),
                int(row.recent),
            )
            for row in totals
        ],
        "recharges": await payments_repo.recharge_counts(conn),
        "events": await payments_repo.event_counts(conn),
    }


async def load_dashboard(engine: AsyncEngine, now: datetime) -> Dashboard:
    """Every figure of the dashboard, in one read transaction (one snapshot on SQLite)."""
    async with read_transaction(engine) as conn:
        sums = await ledger_sums(conn, engine, now)
        wallets = await admin_stats.wallet_totals(conn)
        payments = await _payments(conn, now - timedelta(days=CHART_DAYS))

    def flow(account: str, positive: bool) -> int:
        found = sums.flows.get(account, [0, 0])
        return found[0] if positive else found[1]

    return Dashboard(
        tokens_used=flow(TOKENS_CONSUMED, True),
        tokens_refunded=flow(TOKENS_CONSUMED, False),
        actual_tokens=sum(figures[1] for figures in sums.usage.values()),
        tokens_sold=flow(TOKENS_SOLD, False),
        tokens_granted=flow(TOKENS_GRANTED, False),
        tokens_expired=flow(TOKENS_EXPIRED, True),
        tokens_clawed_back=flow(TOKENS_CLAWED_BACK, True),
        wallets=wallets,
        by_operation=_grouped(sums.usage, 0),
        by_model=_grouped(sums.usage, 1),
        days=_days(sums.days, now.date()),
        **payments,
    )


# --- lists -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalletListing:
    rows: list[AnyRow]
    page: int
    has_more: bool


async def wallet_listing(
    engine: AsyncEngine, chosen: WalletFilter, *, page: int, size: int
) -> WalletListing:
    async with read_transaction(engine) as conn:
        rows, more = await admin_stats.wallet_page(
            conn, chosen, limit=size, offset=(page - 1) * size
        )
    return WalletListing(rows, page, more)


async def wallet_owner(engine: AsyncEngine, user_id: str) -> AnyRow | None:
    """A wallet's row with the email of the account that owns it (None: no wallet)."""
    async with read_transaction(engine) as conn:
        return await admin_stats.wallet_with_email(conn, user_id)


async def plan_stripe_prices(engine: AsyncEngine) -> dict[str, str | None]:
    """Each plan's Stripe price. PlanService's view leaves it out, and an edit's audit
    entry needs its value before the change."""
    async with read_transaction(engine) as conn:
        return {row.name: row.stripe_price_id for row in await plans_repo.plan_rows(conn)}
