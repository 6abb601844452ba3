"""What the admin dashboard reads of the ledger: totals over every wallet, usage by
operation type and model, tokens used and bought by day, and the wallets list.

Every figure is an aggregate computed by the database and every list is one page
(LIMIT/OFFSET): the dashboard never walks the ledger in Python, whatever its size.

The totals read the system accounts' side of each transaction (decision 2): a debit
puts +n on ``tokens_consumed``, a refund -n; a purchase or auto-recharge -n on
``tokens_sold``; a bonus, grant or renewal -n on ``tokens_granted``; expiry +n on
``tokens_expired``; a clawback +n on ``tokens_clawed_back``. One scan of the entries
answers all of them, with no join.

The totals and the usage take a range of entry ids, ``(after_id, upto_id]``: the
ledger is append-only, so what a range adds up to never changes once every entry in
it has committed, and a caller may keep it and ask only for the entries after it
(``web/admin_reads.py`` does; ``entry_count`` tells it whether one came late).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.models import Account
from tokenbank.db.rows import AnyRow
from tokenbank.ledger.accounts import TOKENS_CONSUMED, TOKENS_SOLD
from tokenbank.ledger.repository.tables import entries, transactions, wallets

# The wallets list shows whose wallet it is: the accounts domain's table, read only.
accounts = cast(Table, Account.__table__)

NO_MODEL = ""
# The pricing rule whose usage units are the model's own tokens (input + output).
PER_UNIT_RULE = "per_unit"
# A plan filter that asks for wallets on no plan.
NO_PLAN = "-"


@dataclass(frozen=True, slots=True)
class SystemFlow:
    """What moved through one system account: the sums of its positive and of its
    negative entries (the latter as a positive number)."""

    account: str
    positive: int
    negative: int


@dataclass(frozen=True, slots=True)
class WalletFilter:
    """The wallets list's filters; None leaves one out."""

    status: str | None = None
    plan: str | None = None  # NO_PLAN: wallets on no plan
    min_balance: int | None = None
    max_balance: int | None = None
    search: str | None = None  # part of a user id or of an account's email


# --- ranges of entries --------------------------------------------------------------------


def _in_range(after_id: int, upto_id: int | None) -> ColumnElement[bool]:
    """Entries with ``after_id < id <= upto_id`` (no upper end: up to the newest)."""
    condition = entries.c.id > after_id
    return condition if upto_id is None else condition & (entries.c.id <= upto_id)


async def settled_mark(conn: AsyncConnection, after_id: int, before: datetime) -> int:
    """The highest entry id after ``after_id`` among entries written before ``before``
    (``after_id`` when there is none): a mark below which late commits are unlikely."""
    statement = select(func.max(entries.c.id)).where(
        entries.c.id > after_id, entries.c.created_at < before
    )
    found = await conn.scalar(statement)
    return after_id if found is None else int(found)


async def entry_count(conn: AsyncConnection, upto_id: int) -> int:
    """How many entries have an id up to ``upto_id`` (a range of the primary key)."""
    statement = select(func.count()).select_from(entries).where(entries.c.id <= upto_id)
    return int(await conn.scalar(statement) or 0)


# --- totals ----------------------------------------------------------------------------


async def system_flows(
    conn: AsyncConnection, *, after_id: int = 0, upto_id: int | None = None
) -> dict[str, SystemFlow]:
    """Each system account's positive and negative sums, by account name."""
    amount = entries.c.amount_tokens
    statement = (
        select(
            entries.c.system_account,
            func.coalesce(func.sum(case((amount > 0, amount), else_=0)), 0),
            func.coalesce(func.sum(case((amount < 0, -amount), else_=0)), 0),
        )
        .where(entries.c.system_account.is_not(None), _in_range(after_id, upto_id))
        .group_by(entries.c.system_account)
    )
    rows = (await conn.execute(statement)).all()
    return {row[0]: SystemFlow(row[0], int(row[1]), int(row[2])) for row in rows}


async def wallet_totals(conn: AsyncConnection) -> AnyRow:
    """(wallets, active, suspended, overdrawn, closed, average_balance) over every wallet;
    ``overdrawn`` counts the wallets suspended for an overdraft (decision 6)."""
    status = wallets.c.status

    def count_where(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    statement = select(
        func.count().label("wallets"),
        count_where(status == "active").label("active"),
        count_where(status == "suspended").label("suspended"),
        count_where(wallets.c.suspended_reason == "overdraft").label("overdrawn"),
        count_where(status == "closed").label("closed"),
        func.avg(wallets.c.balance_tokens).label("average_balance"),
    )
    return (await conn.execute(statement)).one()


# --- usage by operation type and model ----------------------------------------------------


def _model() -> ColumnElement[Any]:
    """The model a charge was priced for: the pricing record's (the token process
    writes it), else the app's metadata ``model``, else none."""
    return func.coalesce(
        transactions.c.pricing["model"].as_string(),
        transactions.c.metadata["model"].as_string(),
        literal(NO_MODEL),
    )


def _actual(billable: ColumnElement[Any]) -> ColumnElement[Any]:
    """The model's own tokens behind a charge: a ``per_unit`` pricing record's input
    plus output units; any other charge (fixed, image, a plain deduct) counts as what
    it billed, since nothing recorded says otherwise."""
    pricing = transactions.c.pricing
    units = func.coalesce(pricing[("usage", "input_units")].as_integer(), 0) + func.coalesce(
        pricing[("usage", "output_units")].as_integer(), 0
    )
    return case((pricing[("rule", "type")].as_string() == PER_UNIT_RULE, units), else_=billable)


async def usage_breakdown(
    conn: AsyncConnection, *, after_id: int = 0, upto_id: int | None = None
) -> list[AnyRow]:
    """Debits by (operation_type, model): tokens billed, actual tokens, operations.

    A debit's ``tokens_consumed`` entry is its one positive entry there (a refund's is
    negative), so the statement starts from those entries and joins each header by
    its primary key."""
    billed = entries.c.amount_tokens
    model = _model().label("model")
    statement = (
        select(
            transactions.c.operation_type,
            model,
            func.sum(billed).label("tokens"),
            func.sum(_actual(billed)).label("actual"),
            func.count().label("operations"),
        )
        .select_from(entries)
        .join(transactions, transactions.c.id == entries.c.transaction_id)
        .where(
            entries.c.system_account == TOKENS_CONSUMED,
            billed > 0,
            _in_range(after_id, upto_id),
        )
        .group_by(transactions.c.operation_type, model)
    )
    return list((await conn.execute(statement)).all())


# --- by day ------------------------------------------------------------------------------


def _entry_day(conn: AsyncConnection) -> ColumnElement[Any]:
    """The UTC day of an entry as 'YYYY-MM-DD' text, on either engine."""
    if conn.dialect.name == "sqlite":
        # SQLite keeps naive UTC text 'YYYY-MM-DD HH:MM:SS...' (db/types.py).
        return func.substr(entries.c.created_at, 1, 10)
    return func.to_char(func.timezone("UTC", entries.c.created_at), "YYYY-MM-DD")


async def daily_flow(
    conn: AsyncConnection, *, after_id: int = 0, upto_id: int | None = None
) -> list[AnyRow]:
    """(day, used, purchased): tokens debited and tokens sold (purchases and
    auto-recharges) by UTC day; days with neither are absent."""
    day = _entry_day(conn).label("day")
    amount = entries.c.amount_tokens
    account = entries.c.system_account
    used = case(((account == TOKENS_CONSUMED) & (amount > 0), amount), else_=0)
    sold = case((account == TOKENS_SOLD, -amount), else_=0)
    statement = (
        select(day, func.sum(used).label("used"), func.sum(sold).label("purchased"))
        .where(account.in_((TOKENS_CONSUMED, TOKENS_SOLD)), _in_range(after_id, upto_id))
        .group_by(day)
    )
    return list((await conn.execute(statement)).all())


# --- the wallets list ----------------------------------------------------------------------


def _wallets_with_email() -> Select[Any]:
    return select(
        wallets.c.id,
        wallets.c.user_id,
        wallets.c.balance_tokens,
        wallets.c.held_tokens,
        wallets.c.spent_tokens,
        wallets.c.status,
        wallets.c.suspended_reason,
        wallets.c.plan,
        wallets.c.created_at,
        wallets.c.last_purchase_at,
        accounts.c.email,
    ).outerjoin(accounts, accounts.c.user_id == wallets.c.user_id)


def _filtered(statement: Select[Any], chosen: WalletFilter) -> Select[Any]:
    if chosen.status is not None:
        statement = statement.where(wallets.c.status == chosen.status)
    if chosen.plan == NO_PLAN:
        statement = statement.where(wallets.c.plan.is_(None))
    elif chosen.plan is not None:
        statement = statement.where(wallets.c.plan == chosen.plan)
    if chosen.min_balance is not None:
        statement = statement.where(wallets.c.balance_tokens >= chosen.min_balance)
    if chosen.max_balance is not None:
        statement = statement.where(wallets.c.balance_tokens <= chosen.max_balance)
    if chosen.search:
        statement = statement.where(
            or_(
                wallets.c.user_id.contains(chosen.search, autoescape=True),
                accounts.c.email.contains(chosen.search.lower(), autoescape=True),
            )
        )
    return statement


async def wallet_page(
    conn: AsyncConnection, chosen: WalletFilter, *, limit: int, offset: int
) -> tuple[list[AnyRow], bool]:
    """One page of the wallets that pass the filters, newest first, with the email of
    the account that owns each (if any), and whether another page follows."""
    statement = _filtered(_wallets_with_email(), chosen).order_by(wallets.c.id.desc())
    rows = list((await conn.execute(statement.limit(limit + 1).offset(offset))).all())
    return rows[:limit], len(rows) > limit


async def wallet_with_email(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    statement = _wallets_with_email().where(wallets.c.user_id == user_id)
    found: AnyRow | None = (await conn.execute(statement)).first()
    return found
