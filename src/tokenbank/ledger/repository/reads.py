"""The ledger's read-only queries: balances, history, statistics, holds, and the
wallet reads that the plans domain and the token process make."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy import cast as cast_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import ScalarSelect

from tokenbank.db.direct import DirectRead
from tokenbank.db.models import App, Feature, Plan, PlanFeature
from tokenbank.db.rows import AnyRow
from tokenbank.ledger.grants import PAID, PROMOTIONAL
from tokenbank.ledger.repository import scheduled
from tokenbank.ledger.repository.tables import entries, grants, holds, transactions, wallets
from tokenbank.ledger.results import (
    BalanceInfo,
    GrantView,
    HoldView,
    LedgerEntryView,
    ScheduledCreditView,
    UserStatistics,
)


def balance_info(wallet: AnyRow, grants: Sequence[AnyRow] = ()) -> BalanceInfo:
    """A wallet's balance; with its live grants, what the balance is made of."""
    by_category = {PAID: 0, PROMOTIONAL: 0}
    for grant in grants:
        by_category[grant.category] += int(grant.remaining_tokens)
    dated = [g for g in grants if g.expires_at is not None]
    next_at = min((g.expires_at for g in dated), default=None)
    return BalanceInfo(
        user_id=wallet.user_id,
        tokens_balance=wallet.balance_tokens,
        tokens_spent=wallet.spent_tokens,
        held=wallet.held_tokens,
        available=wallet.balance_tokens - wallet.held_tokens,
        status=wallet.status,
        tier=wallet.plan,
        last_renewal_at=wallet.last_renewal_at,
        created_at=wallet.created_at,
        paid_tokens=by_category[PAID],
        promotional_tokens=by_category[PROMOTIONAL],
        next_expiry_at=next_at,
        next_expiry_tokens=sum(int(g.remaining_tokens) for g in dated if g.expires_at == next_at),
    )


# One round trip: the wallet, with one row per live grant (or one row of NULLs).
# The hottest read: asyncpg runs it directly on PostgreSQL (tokenbank.db.direct).
_WALLET_WITH_GRANTS = DirectRead(
    select(
        wallets,
        grants.c.category,
        grants.c.expires_at,
        grants.c.remaining_tokens,
    )
    .outerjoin(grants, and_(grants.c.wallet_id == wallets.c.id, grants.c.live == true()))
    .where(wallets.c.user_id == bindparam("user_id"))
)


async def balance(conn: AsyncConnection, user_id: str) -> BalanceInfo | None:
    """The balance, inside the caller's transaction."""
    return _balance(await _WALLET_WITH_GRANTS.rows(conn, {"user_id": user_id}))


async def read_balance(engine: AsyncEngine, user_id: str) -> BalanceInfo | None:
    """The balance, read on its own: directly by asyncpg on PostgreSQL."""
    return _balance(await _WALLET_WITH_GRANTS.read(engine, {"user_id": user_id}))


def _balance(rows: Sequence[Any]) -> BalanceInfo | None:
    if not rows:
        return None
    return balance_info(rows[0], [row for row in rows if row.category is not None])


async def wallet_grants(
    conn: AsyncConnection, user_id: str, now: datetime, *, limit: int, offset: int
) -> list[GrantView]:
    """A wallet's grants, newest first."""
    statement = (
        select(grants, wallets.c.user_id)
        .join(wallets, wallets.c.id == grants.c.wallet_id)
        .where(wallets.c.user_id == user_id)
        .order_by(grants.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_grant_view(row, now) for row in await conn.execute(statement)]


def _grant_view(row: AnyRow, now: datetime) -> GrantView:
    expired = row.expires_at is not None and row.expires_at <= now
    status = "expired" if expired else ("active" if row.remaining_tokens > 0 else "spent")
    return GrantView(
        grant_id=int(row.id),
        user_id=row.user_id,
        source=row.source,
        category=row.category,
        priority=int(row.priority),
        amount_tokens=int(row.amount_tokens),
        remaining_tokens=int(row.remaining_tokens),
        expires_at=row.expires_at,
        created_at=row.created_at,
        status=status,
    )


def _wallet_id_of(user_id: str) -> ScalarSelect[Any]:
    return select(wallets.c.id).where(wallets.c.user_id == user_id).scalar_subquery()


def _wallet_entries(
    user_id: str,
    *,
    operation_type: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
) -> Select[Any]:
    statement = (
        select(
            entries.c.id,
            entries.c.transaction_id,
            entries.c.amount_tokens,
            entries.c.balance_before,
            entries.c.balance_after,
            entries.c.created_at,
            transactions.c.operation_type,
            transactions.c.description,
            transactions.c.metadata,
            transactions.c.refund_of_id,
            transactions.c.hold_id,
        )
        .join(transactions, transactions.c.id == entries.c.transaction_id)
        # The wallet's id as a value, not a join: joined, PostgreSQL estimates a
        # wallet's entries at the average wallet's, sorts all of them for a page, and
        # took 240 ms for the first page of a 40,000-entry wallet among 10,000
        # wallets; by value it walks (wallet_id, id) down and stops (3 ms).
        .where(entries.c.wallet_id == _wallet_id_of(user_id))
    )
    if operation_type is not None:
        statement = statement.where(transactions.c.operation_type == operation_type)
    if start_date is not None:
        statement = statement.where(entries.c.created_at >= start_date)
    if end_date is not None:
        statement = statement.where(entries.c.created_at <= end_date)
    return statement


async def user_entries(
    conn: AsyncConnection,
    user_id: str,
    *,
    limit: int,
    offset: int,
    operation_type: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
) -> list[LedgerEntryView]:
    statement = _wallet_entries(
        user_id, operation_type=operation_type, start_date=start_date, end_date=end_date
    )
    statement = statement.order_by(entries.c.id.desc()).limit(limit).offset(offset)
    return [
        LedgerEntryView(
            id=row.id,
            transaction_id=row.transaction_id,
            operation_type=row.operation_type,
            tokens_amount=row.amount_tokens,
            balance_before=row.balance_before,
            balance_after=row.balance_after,
            description=row.description,
            metadata=row.metadata,
            created_at=row.created_at,
            refund_of=row.refund_of_id,
            hold_id=row.hold_id,
        )
        for row in await conn.execute(statement)
    ]


async def user_statistics(
    conn: AsyncConnection,
    user_id: str,
    *,
    start_date: datetime | None,
    end_date: datetime | None,
) -> UserStatistics:
    filtered = _wallet_entries(
        user_id, operation_type=None, start_date=start_date, end_date=end_date
    ).subquery()
    amount = filtered.c.amount_tokens
    statement = select(
        func.coalesce(func.sum(case((amount < 0, -amount), else_=0)), 0),
        func.coalesce(func.sum(case((amount > 0, amount), else_=0)), 0),
        func.count(),
    )
    spent, earned, count = (await conn.execute(statement)).one()
    return UserStatistics(
        total_spent=int(spent),
        total_earned=int(earned),
        net_change=int(earned) - int(spent),
        operation_count=int(count),
    )


async def hold_view(conn: AsyncConnection, hold_id: str) -> HoldView | None:
    statement = (
        select(*holds.c, wallets.c.user_id)
        .join(wallets, wallets.c.id == holds.c.wallet_id)
        .where(holds.c.id == hold_id)
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        return None
    return HoldView(
        hold_id=row.id,
        user_id=row.user_id,
        status=row.status,
        amount_tokens=row.amount_tokens,
        captured_tokens=row.captured_tokens,
        operation_type=row.operation_type,
        expires_at=row.expires_at,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


async def transaction_of_entry(conn: AsyncConnection, entry_id: int) -> str | None:
    statement = select(entries.c.transaction_id).where(entries.c.id == entry_id)
    found = (await conn.execute(statement)).scalar()
    return str(found) if found is not None else None


# --- wallets and their plans ----------------------------------------------------------

# The token process needs a wallet and its plan's profit in one round trip, so this
# one ledger read joins the plans domain's table.
plans = cast(Table, Plan.__table__)
# The plans domain's tables, read with a wallet in one statement (the token process).
features = cast(Table, Feature.__table__)
plan_features = cast(Table, PlanFeature.__table__)
apps = cast(Table, App.__table__)


async def wallets_on_plan(conn: AsyncConnection, name: str) -> int:
    statement = select(func.count()).select_from(wallets).where(wallets.c.plan == name)
    return int((await conn.execute(statement)).scalar_one())


# A wallet's state and its plan's profit percentage (None without a plan).
_WALLET_WITH_PLAN_COLUMNS = (
    wallets.c.user_id,
    wallets.c.status,
    wallets.c.balance_tokens,
    wallets.c.held_tokens,
    wallets.c.plan,
    plans.c.profit_percent.label("plan_profit_percent"),
)


async def wallet_with_plan(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    """A wallet's state and its plan's profit percentage (None without a plan)."""
    statement = (
        select(*_WALLET_WITH_PLAN_COLUMNS)
        .outerjoin(plans, plans.c.name == wallets.c.plan)
        .where(wallets.c.user_id == user_id)
    )
    return (await conn.execute(statement)).first()


# Every token-process start and end asks for its wallet, its plan, its feature and
# whether the plan includes it: one statement, one round trip (each round trip costs
# the worker a send and a wake-up on loopback; three were a third of a start). The
# base is one row, so the answer has a row whether or not the wallet or the feature
# exists. asyncpg runs it directly on PostgreSQL (tokenbank.db.direct), so the
# pricing rule comes as its JSON text (``pricing_rule_json``): no column needs
# processing by SQLAlchemy.
_ONE_ROW = select(literal_column("1").label("one")).subquery("one_row")
_FEATURE_COLUMNS = [column for column in features.c if column.name != "pricing_rule"]
_ACCESS = DirectRead(
    select(
        *_WALLET_WITH_PLAN_COLUMNS,
        *_FEATURE_COLUMNS,
        cast_(features.c.pricing_rule, Text).label("pricing_rule_json"),
        apps.c.slug.label("app_slug"),
        exists()
        .where(
            plan_features.c.plan_name == wallets.c.plan,
            plan_features.c.feature_id == bindparam("feature_id"),
        )
        .label("in_plan"),
    ).select_from(
        _ONE_ROW.outerjoin(wallets, wallets.c.user_id == bindparam("user_id"))
        .outerjoin(plans, plans.c.name == wallets.c.plan)
        .outerjoin(features, features.c.id == bindparam("feature_id"))
        .outerjoin(apps, apps.c.id == features.c.app_id)
    )
)


async def access_row(conn: AsyncConnection, user_id: str, feature_id: str) -> AnyRow:
    """The wallet's state and its plan's profit percentage (``user_id`` None: no
    wallet), the feature's row (``id`` None: no feature) with its app's slug, and
    ``in_plan``: whether the wallet's plan includes the feature. The feature's
    pricing rule is ``pricing_rule_json``, its JSON text."""
    rows = await _ACCESS.rows(conn, {"user_id": user_id, "feature_id": feature_id})
    row: AnyRow = rows[0]
    return row


async def read_access_row(engine: AsyncEngine, user_id: str, feature_id: str) -> AnyRow:
    """:func:`access_row`, read on its own: directly by asyncpg on PostgreSQL (every
    token-process start and end asks)."""
    rows = await _ACCESS.read(engine, {"user_id": user_id, "feature_id": feature_id})
    row: AnyRow = rows[0]
    return row


# --- the ledger, read for retries of the token process -----------------------------


async def usage_by_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    """The debit an idempotency key recorded: its pricing record and wallet amount."""
    condition = and_(
        transactions.c.idempotency_scope == scope, transactions.c.idempotency_key == key
    )
    return await _usage(conn, condition)


async def usage_by_hold(conn: AsyncConnection, hold_id: str) -> AnyRow | None:
    """The debit that captured a hold: its pricing record and wallet amount."""
    return await _usage(conn, transactions.c.hold_id == hold_id)


async def _usage(conn: AsyncConnection, condition: Any) -> AnyRow | None:
    statement = (
        select(
            transactions.c.id,
            transactions.c.pricing,
            transactions.c.hold_id,
            (-entries.c.amount_tokens).label("amount_tokens"),
            entries.c.balance_after,
            wallets.c.user_id,
        )
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .join(wallets, wallets.c.id == entries.c.wallet_id)
        .where(condition)
    )
    return (await conn.execute(statement)).first()


async def hold_id_by_key(conn: AsyncConnection, scope: str, key: str) -> str | None:
    """The hold a token process start placed under an idempotency key."""
    statement = select(holds.c.id).where(
        holds.c.idempotency_scope == scope, holds.c.idempotency_key == key
    )
    found = (await conn.execute(statement)).scalar()
    return None if found is None else str(found)


async def waiting_scheduled_credits(
    conn: AsyncConnection, wallet: AnyRow, *, limit: int
) -> list[ScheduledCreditView]:
    rows = await scheduled.waiting_for_wallets(conn, [wallet.id], limit)
    return [
        ScheduledCreditView(
            scheduled_credit_id=int(row.id),
            user_id=wallet.user_id,
            source=row.operation_type,
            category=row.category,
            priority=int(row.priority),
            amount_tokens=int(row.amount_tokens),
            effective_at=row.effective_at,
            expires_at=row.expires_at,
            created_at=row.created_at,
        )
        for row in rows
    ]
