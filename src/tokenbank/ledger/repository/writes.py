"""The statements of the ledger's write path, and the lookups it makes inside its transaction.

Balance changes are single conditional UPDATEs with RETURNING: the condition is the
rule (enough available, right status) and the database applies it atomically, so
two concurrent requests can never both spend the last tokens (decision 3, docs/architecture.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import is_sqlite
from tokenbank.db.rows import AnyRow
from tokenbank.ledger.repository.sqlite_reads import select_now
from tokenbank.ledger.repository.tables import (
    costs,
    entries,
    grants,
    holds,
    idempotency_keys,
    transactions,
    wallets,
)

WALLET_STATE = (
    wallets.c.id,
    wallets.c.balance_tokens,
    wallets.c.held_tokens,
    wallets.c.next_grant_event_at,
)


def _no_grant_due(now: datetime) -> ColumnElement[bool]:
    """A spend takes the fast path only while none of the wallet's grants is due to
    expire: otherwise the handler expires what is due first (decision 13)."""
    return or_(wallets.c.next_grant_event_at.is_(None), wallets.c.next_grant_event_at > now)


def _upsert_insert(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT with ON CONFLICT clauses, in the connection's dialect."""
    dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    return dialect_insert(table)


# --- wallets -------------------------------------------------------------------------


async def wallet_by_user(conn: AsyncConnection, user_id: str) -> AnyRow | None:
    result = await conn.execute(select(wallets).where(wallets.c.user_id == user_id))
    return result.first()


async def insert_wallet(conn: AsyncConnection, user_id: str, now: datetime) -> int | None:
    """Insert a wallet unless one exists; the new id, or None when it existed."""
    values = {
        "user_id": user_id,
        "balance_tokens": 0,
        "held_tokens": 0,
        "spent_tokens": 0,
        "status": "active",
        "created_at": now,
        "updated_at": now,
    }
    statement = (
        _upsert_insert(conn, wallets)
        .values(values)
        .on_conflict_do_nothing(index_elements=["user_id"])
        .returning(wallets.c.id)
    )
    result = (await conn.execute(statement)).scalar()
    return int(result) if result is not None else None


def _restores(amount_tokens: int) -> ColumnElement[bool]:
    """A top-up that covers an overdraft lifts the suspension it caused (decision 6,
    docs/architecture.md)."""
    return and_(
        wallets.c.status == "suspended",
        wallets.c.suspended_reason == "overdraft",
        wallets.c.balance_tokens + amount_tokens >= wallets.c.held_tokens,
    )


def _topped_up(amount_tokens: int) -> dict[str, Any]:
    restores = _restores(amount_tokens)
    return {
        "balance_tokens": wallets.c.balance_tokens + amount_tokens,
        "status": case((restores, "active"), else_=wallets.c.status),
        "suspended_reason": case((restores, null()), else_=wallets.c.suspended_reason),
    }


def _overdrawn(new_balance: Any, new_held: Any) -> dict[str, Any]:
    """Suspend an active wallet that usage has overdrawn; other statuses stay."""
    overdraws = and_(wallets.c.status == "active", new_balance < new_held)
    return {
        "status": case((overdraws, "suspended"), else_=wallets.c.status),
        "suspended_reason": case((overdraws, "overdraft"), else_=wallets.c.suspended_reason),
    }


async def credit_wallet(
    conn: AsyncConnection, user_id: str, amount_tokens: int, now: datetime
) -> AnyRow | None:
    statement = (
        update(wallets)
        .where(wallets.c.user_id == user_id, wallets.c.status != "closed")
        .values(updated_at=now, **_topped_up(amount_tokens))
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).first()


async def refund_wallet(
    conn: AsyncConnection, user_id: str, amount_tokens: int, now: datetime
) -> AnyRow | None:
    statement = (
        update(wallets)
        .where(
            wallets.c.user_id == user_id,
            wallets.c.status != "closed",
            wallets.c.spent_tokens >= amount_tokens,
        )
        .values(
            updated_at=now,
            spent_tokens=wallets.c.spent_tokens - amount_tokens,
            **_topped_up(amount_tokens),
        )
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).first()


async def debit_wallet(
    conn: AsyncConnection, user_id: str, amount_tokens: int, now: datetime
) -> AnyRow | None:
    statement = (
        update(wallets)
        .where(
            wallets.c.user_id == user_id,
            wallets.c.status == "active",
            wallets.c.balance_tokens - wallets.c.held_tokens >= amount_tokens,
            _no_grant_due(now),
        )
        .values(
            balance_tokens=wallets.c.balance_tokens - amount_tokens,
            spent_tokens=wallets.c.spent_tokens + amount_tokens,
            updated_at=now,
        )
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).first()


async def overdraw_wallet(
    conn: AsyncConnection, user_id: str, amount_tokens: int, now: datetime
) -> AnyRow | None:
    """Record usage that already happened, even past zero (decision 6, docs/architecture.md).

    Its handler caught the wallet up first: a grant still due then holds only what
    pending holds need, and the usage may take it (as a capture would).
    """
    new_balance = wallets.c.balance_tokens - amount_tokens
    statement = (
        update(wallets)
        .where(wallets.c.user_id == user_id, wallets.c.status != "closed")
        .values(
            balance_tokens=new_balance,
            spent_tokens=wallets.c.spent_tokens + amount_tokens,
            updated_at=now,
            **_overdrawn(new_balance, wallets.c.held_tokens),
        )
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).first()


async def reserve_tokens(
    conn: AsyncConnection, user_id: str, amount_tokens: int, now: datetime
) -> AnyRow | None:
    statement = (
        update(wallets)
        .where(
            wallets.c.user_id == user_id,
            wallets.c.status == "active",
            wallets.c.balance_tokens - wallets.c.held_tokens >= amount_tokens,
            _no_grant_due(now),
        )
        .values(held_tokens=wallets.c.held_tokens + amount_tokens, updated_at=now)
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).first()


async def settle_hold(
    conn: AsyncConnection,
    wallet_id: int,
    *,
    held_tokens: int,
    captured_tokens: int,
    now: datetime,
) -> AnyRow:
    """Release a hold's reservation and take what was actually used."""
    new_balance = wallets.c.balance_tokens - captured_tokens
    new_held = wallets.c.held_tokens - held_tokens
    statement = (
        update(wallets)
        .where(wallets.c.id == wallet_id)
        .values(
            balance_tokens=new_balance,
            held_tokens=new_held,
            spent_tokens=wallets.c.spent_tokens + captured_tokens,
            updated_at=now,
            **_overdrawn(new_balance, new_held),
        )
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).one()


async def remove_from_wallet(
    conn: AsyncConnection,
    wallet_id: int,
    amount_tokens: int,
    *,
    next_event_at: datetime | None,
    now: datetime,
) -> AnyRow:
    """Take tokens the wallet did not spend out of it (expired, clawed back): its
    balance only, never below what it holds (a CHECK)."""
    statement = (
        update(wallets)
        .where(wallets.c.id == wallet_id)
        .values(
            balance_tokens=wallets.c.balance_tokens - amount_tokens,
            next_grant_event_at=next_event_at,
            updated_at=now,
        )
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).one()


async def set_wallet_plan(
    conn: AsyncConnection, user_id: str, plan: str | None, now: datetime
) -> bool:
    """Put a wallet on a plan. Joining another plan starts its renewal periods now, and
    its first allocation is due now; the same plan again changes nothing."""
    if plan is None:
        values: dict[str, Any] = {"plan": None, "plan_since": None, "renewal_due_at": None}
    else:
        same = wallets.c.plan == plan
        values = {
            "plan": plan,
            "plan_since": case((same, wallets.c.plan_since), else_=now),
            "renewal_due_at": case((same, wallets.c.renewal_due_at), else_=now),
        }
    statement = update(wallets).where(wallets.c.user_id == user_id).values(**values, updated_at=now)
    return (await conn.execute(statement)).rowcount > 0


async def set_wallet_status(
    conn: AsyncConnection, user_id: str, status: str, reason: str | None, now: datetime
) -> AnyRow | None:
    statement = (
        update(wallets)
        .where(wallets.c.user_id == user_id)
        .values(status=status, suspended_reason=reason, updated_at=now)
        .returning(*WALLET_STATE, wallets.c.status)
    )
    return (await conn.execute(statement)).first()


# --- ledger transactions and entries ---------------------------------------------------


async def insert_entries(
    conn: AsyncConnection,
    *,
    transaction_id: str,
    wallet_id: int,
    amount_tokens: int,
    balance_after: int,
    system_account: str,
    now: datetime,
) -> int:
    """Write both legs of a transaction; the wallet entry's id is returned."""
    legs: list[dict[str, Any]] = [
        {
            "transaction_id": transaction_id,
            "wallet_id": wallet_id,
            "system_account": None,
            "amount_tokens": amount_tokens,
            "balance_before": balance_after - amount_tokens,
            "balance_after": balance_after,
            "created_at": now,
        },
        {
            "transaction_id": transaction_id,
            "wallet_id": None,
            "system_account": system_account,
            "amount_tokens": -amount_tokens,
            "balance_before": None,
            "balance_after": None,
            "created_at": now,
        },
    ]
    # A parameter list, not .values(legs): SQLAlchemy never caches a multi-row
    # .values(), so that form compiled afresh on every call (10% of a hold's CPU).
    statement = insert(entries).returning(entries.c.id, entries.c.wallet_id)
    rows = (await conn.execute(statement, legs)).all()
    return next(int(row.id) for row in rows if row.wallet_id is not None)


async def insert_transaction(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Seal a transaction: the header goes in last, after its entries (see models)."""
    await conn.execute(insert(transactions).values(values))


async def transaction_by_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    statement = (
        select(
            transactions.c.id,
            transactions.c.request_hash,
            transactions.c.hold_id,
            entries.c.id.label("entry_id"),
            entries.c.balance_after,
            wallets.c.user_id,
            wallets.c.held_tokens,
        )
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .join(wallets, wallets.c.id == entries.c.wallet_id)
        .where(transactions.c.idempotency_scope == scope, transactions.c.idempotency_key == key)
    )
    return (await conn.execute(statement)).first()


async def clawback_by_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    """A keyed clawback's transaction: its id, what it took and the balance after."""
    statement = (
        select(transactions.c.id, entries.c.amount_tokens, entries.c.balance_after)
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .where(
            transactions.c.idempotency_scope == scope,
            transactions.c.idempotency_key == key,
            transactions.c.kind == "clawback",
            entries.c.wallet_id.is_not(None),
        )
    )
    return (await conn.execute(statement)).first()


async def transaction_by_hold(conn: AsyncConnection, hold_id: str) -> AnyRow | None:
    statement = (
        select(transactions.c.id, entries.c.id.label("entry_id"), entries.c.balance_after)
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .where(transactions.c.hold_id == hold_id, entries.c.wallet_id.is_not(None))
    )
    return (await conn.execute(statement)).first()


async def debit_for_refund(conn: AsyncConnection, transaction_id: str) -> AnyRow | None:
    """The debit a refund names: its user and how much it took."""
    statement = (
        select(wallets.c.user_id, (-entries.c.amount_tokens).label("debited_tokens"))
        .select_from(transactions)
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .join(wallets, wallets.c.id == entries.c.wallet_id)
        .where(transactions.c.id == transaction_id, transactions.c.kind == "debit")
    )
    return (await conn.execute(statement)).first()


async def credit_wallet_id(conn: AsyncConnection, transaction_id: str) -> int | None:
    """The wallet of the credit a clawback names; None if no such credit."""
    statement = select(transactions.c.wallet_id).where(
        transactions.c.id == transaction_id, transactions.c.kind == "credit"
    )
    wallet_id = (await conn.execute(statement)).scalar()
    return int(wallet_id) if wallet_id is not None else None


async def refunded_tokens(conn: AsyncConnection, transaction_id: str) -> int:
    statement = (
        select(func.coalesce(func.sum(entries.c.amount_tokens), 0))
        .select_from(transactions)
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .where(transactions.c.refund_of_id == transaction_id, entries.c.wallet_id.is_not(None))
    )
    return int((await conn.execute(statement)).scalar_one())


# --- holds -----------------------------------------------------------------------------


async def insert_hold(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(holds).values(values))


HOLD_WITH_USER = (*holds.c, wallets.c.user_id)


async def hold_by_id(conn: AsyncConnection, hold_id: str) -> AnyRow | None:
    """The hold, its wallet's user and when the wallet's grants are next due."""
    statement = (
        select(*HOLD_WITH_USER, wallets.c.next_grant_event_at)
        .join(wallets, wallets.c.id == holds.c.wallet_id)
        .where(holds.c.id == hold_id)
    )
    return (await conn.execute(statement)).first()


async def hold_by_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    statement = (
        select(*HOLD_WITH_USER)
        .join(wallets, wallets.c.id == holds.c.wallet_id)
        .where(holds.c.idempotency_scope == scope, holds.c.idempotency_key == key)
    )
    return (await conn.execute(statement)).first()


async def resolve_hold(
    conn: AsyncConnection,
    hold_id: str,
    *,
    status: str,
    now: datetime,
    captured_tokens: int | None = None,
) -> bool:
    """Move a pending hold to its final status; False when it was no longer pending."""
    statement = (
        update(holds)
        .where(holds.c.id == hold_id, holds.c.status == "pending")
        .values(status=status, captured_tokens=captured_tokens, resolved_at=now)
        .returning(holds.c.id)
    )
    return (await conn.execute(statement)).first() is not None


async def release_reservation(
    conn: AsyncConnection, wallet_id: int, held_tokens: int, now: datetime
) -> AnyRow:
    statement = (
        update(wallets)
        .where(wallets.c.id == wallet_id)
        .values(held_tokens=wallets.c.held_tokens - held_tokens, updated_at=now)
        .returning(*WALLET_STATE)
    )
    return (await conn.execute(statement)).one()


async def expired_holds(
    conn: AsyncConnection, now: datetime, *, limit: int, wallet_id: int | None = None
) -> list[AnyRow]:
    statement = (
        select(holds.c.id, holds.c.wallet_id, holds.c.amount_tokens)
        .where(holds.c.status == "pending", holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
    )
    if wallet_id is not None:
        statement = statement.where(holds.c.wallet_id == wallet_id)
    return list((await conn.execute(statement)).all())


# --- the cost table --------------------------------------------------------------------


async def all_costs(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(costs.c.operation_type, costs.c.cost_tokens))
    return {row.operation_type: int(row.cost_tokens) for row in rows}


async def upsert_cost(
    conn: AsyncConnection,
    operation_type: str,
    cost_tokens: int,
    description: str | None,
    now: datetime,
) -> None:
    values = {
        "operation_type": operation_type,
        "cost_tokens": cost_tokens,
        "description": description,
        "updated_at": now,
    }
    statement = _upsert_insert(conn, costs).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["operation_type"],
        set_={"cost_tokens": cost_tokens, "description": description, "updated_at": now},
    )
    await conn.execute(statement)


async def delete_cost(conn: AsyncConnection, operation_type: str) -> bool:
    statement = costs.delete().where(costs.c.operation_type == operation_type)
    return (await conn.execute(statement)).rowcount > 0


# --- the batch kernel (group commit) ----------------------------------------------------


_LOCKED_WALLET_COLUMNS = (
    wallets.c.id,
    wallets.c.user_id,
    wallets.c.balance_tokens,
    wallets.c.held_tokens,
    wallets.c.spent_tokens,
    wallets.c.status,
    wallets.c.suspended_reason,
    wallets.c.next_grant_event_at,
)
# Built once: constructing the statement per batch (the IN operator, coercions) was
# a tenth of a batch's Python time. In id order, so two batches never deadlock.
_LOCK_WALLETS = (
    select(*_LOCKED_WALLET_COLUMNS)
    .where(wallets.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(wallets.c.id)
    .with_for_update()
)
# PostgreSQL takes the ids as one array: one SQL text whatever their number, so
# one prepared statement (an expanding IN renders a new text per count).
_LOCK_WALLETS_POSTGRES = (
    select(*_LOCKED_WALLET_COLUMNS)
    .where(wallets.c.user_id == func.any(bindparam("user_ids", type_=postgresql.ARRAY(String))))
    .order_by(wallets.c.id)
    .with_for_update()
)


# The batch kernel's lock also reads the wallets' live grants: one round trip.
# SQLite: a row per live grant (the wallet's columns repeated), or one with no grant;
# FOR UPDATE OF the wallets only (SQLite ignores it: it has one writer).
_GRANT_COLUMNS = (
    grants.c.id,
    grants.c.category,
    grants.c.priority,
    grants.c.expires_at,
    grants.c.remaining_tokens,
)
_WITH_LIVE_GRANTS = wallets.outerjoin(
    grants, and_(grants.c.wallet_id == wallets.c.id, grants.c.live == true())
)
_LOCK_WITH_GRANTS = (
    select(*_LOCKED_WALLET_COLUMNS, *(c.label(f"grant_{c.name}") for c in _GRANT_COLUMNS))
    .select_from(_WITH_LIVE_GRANTS)
    .where(wallets.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(wallets.c.id, grants.c.id)
    .with_for_update(of=wallets)
)
# PostgreSQL: a row per wallet, its live grants as one array of (id, category, priority,
# expires_at, remaining_tokens) records. It plans this statement on every call (a
# custom plan, for the ids given, always looks cheaper than the generic one); planning
# the join above took twice as long as planning one table with a subquery (0.17 vs
# 0.09 ms a batch, bench/PROFILE.md).
#
# Under READ COMMITTED, a wallet this statement had to wait for comes back as its
# newest version (PostgreSQL re-reads a row it locks after a wait, and computes the
# row's expressions again), while a subquery still reads the statement's snapshot:
# the grants from before the write it waited for (a credit's new grant missing, say,
# and the wallet's next expiry then computed without it). Every write of a grant also
# writes its wallet, so the wallet's version (``xmin``) in the snapshot differs from
# the locked one exactly when the subquery's grants may be stale; for those wallets
# the grants come from ``tokenbank_live_grants`` (migration 0014), a VOLATILE function,
# which reads them with a snapshot of its own, taken after the wait.
_SNAPSHOT_WALLET = wallets.alias("snapshot_wallet")
_GRANTS_CURRENT = (
    select(literal_column("snapshot_wallet.xmin") == literal_column("wallets.xmin"))
    .where(_SNAPSHOT_WALLET.c.id == wallets.c.id)
    .scalar_subquery()
)
_LIVE_GRANTS_ARRAY = func.array(
    select(tuple_(*_GRANT_COLUMNS))
    .where(grants.c.wallet_id == wallets.c.id, grants.c.live == true())
    .order_by(grants.c.id)
    .scalar_subquery()
)
_LIVE_GRANTS_NOW = func.tokenbank_live_grants(wallets.c.id).table_valued(
    *(column.name for column in _GRANT_COLUMNS)
)
_LIVE_GRANTS_NOW_ARRAY = func.array(
    select(tuple_(*_LIVE_GRANTS_NOW.c)).select_from(_LIVE_GRANTS_NOW).scalar_subquery()
)
_LOCK_WITH_GRANTS_POSTGRES = (
    select(
        *_LOCKED_WALLET_COLUMNS,
        case((_GRANTS_CURRENT, _LIVE_GRANTS_ARRAY), else_=_LIVE_GRANTS_NOW_ARRAY).label(
            "live_grants"
        ),
    )
    .where(wallets.c.user_id == func.any(bindparam("user_ids", type_=postgresql.ARRAY(String))))
    .order_by(wallets.c.id)
    .with_for_update(of=wallets)
)
# (id, category, priority, expires_at, remaining_tokens)
GrantTuple = tuple[int, str, int, datetime | None, int]


async def lock_wallets_with_grants(
    conn: AsyncConnection, user_ids: list[str]
) -> list[tuple[AnyRow, list[GrantTuple]]]:
    """Read and lock the wallets of a batch: each with its live grants, oldest first."""
    if not is_sqlite(conn):
        rows = await conn.execute(_LOCK_WITH_GRANTS_POSTGRES, {"user_ids": user_ids})
        # asyncpg decodes the records' timestamps as aware UTC datetimes.
        return [(row, list(row.live_grants)) for row in rows]
    locked: dict[int, tuple[AnyRow, list[GrantTuple]]] = {}
    for row in await select_now(conn, _LOCK_WITH_GRANTS, "user_ids", user_ids):
        _, live = locked.setdefault(row.id, (row, []))
        if row.grant_id is not None:
            live.append(
                (
                    row.grant_id,
                    row.grant_category,
                    row.grant_priority,
                    row.grant_expires_at,
                    row.grant_remaining_tokens,
                )
            )
    return list(locked.values())


async def lock_wallets_by_id(conn: AsyncConnection, wallet_ids: list[int]) -> None:
    """Lock wallets in id order, the order every batch locks them in (so that a sweep
    over many wallets and a batch never wait on each other in a circle)."""
    statement = (
        select(wallets.c.id)
        .where(wallets.c.id.in_(wallet_ids))
        .order_by(wallets.c.id)
        .with_for_update()
    )
    await conn.execute(statement)


async def lock_wallets(conn: AsyncConnection, user_ids: list[str]) -> dict[str, AnyRow]:
    """Read and lock the wallets of a batch."""
    statement = _LOCK_WALLETS if is_sqlite(conn) else _LOCK_WALLETS_POSTGRES
    rows = await conn.execute(statement, {"user_ids": user_ids})
    return {row.user_id: row for row in rows}


async def transactions_by_keys(
    conn: AsyncConnection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], AnyRow]:
    """The committed transactions of a batch's idempotency keys, keyed by (scope, key)."""
    statement = (
        select(
            transactions.c.id,
            transactions.c.idempotency_scope,
            transactions.c.idempotency_key,
            transactions.c.request_hash,
            entries.c.id.label("entry_id"),
            entries.c.balance_after,
            wallets.c.user_id,
        )
        .join(entries, entries.c.transaction_id == transactions.c.id)
        .join(wallets, wallets.c.id == entries.c.wallet_id)
        .where(tuple_(transactions.c.idempotency_scope, transactions.c.idempotency_key).in_(keys))
    )
    return {
        (row.idempotency_scope, row.idempotency_key): row for row in await conn.execute(statement)
    }


# --- the idempotency key registry --------------------------------------------------------


async def record_keys(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Register keys of committed requests; a key already taken raises IntegrityError."""
    await conn.execute(insert(idempotency_keys), rows)


async def registered_key(conn: AsyncConnection, scope: str, key: str) -> AnyRow | None:
    statement = select(idempotency_keys.c.request_hash, idempotency_keys.c.operation).where(
        idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
    )
    return (await conn.execute(statement)).first()


def _registered_keys(keys: Any) -> Select[Any]:
    return (
        select(
            idempotency_keys.c.scope,
            idempotency_keys.c.key,
            idempotency_keys.c.request_hash,
            transactions.c.id,
            entries.c.id.label("entry_id"),
            entries.c.balance_after,
            wallets.c.user_id,
        )
        .select_from(idempotency_keys)
        .outerjoin(
            transactions,
            and_(
                transactions.c.idempotency_scope == idempotency_keys.c.scope,
                transactions.c.idempotency_key == idempotency_keys.c.key,
            ),
        )
        .outerjoin(
            entries,
            and_(entries.c.transaction_id == transactions.c.id, entries.c.wallet_id.is_not(None)),
        )
        .outerjoin(wallets, wallets.c.id == entries.c.wallet_id)
        .where(tuple_(idempotency_keys.c.scope, idempotency_keys.c.key).in_(keys))
    )


# SQLite: built once, its SQL compiled once per number of keys (sqlite_reads).
_REGISTERED_KEYS_SQLITE = _registered_keys(bindparam("keys", expanding=True))


async def registered_keys(
    conn: AsyncConnection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], AnyRow]:
    """A batch's registered keys, with the transaction each left (if any)."""
    if is_sqlite(conn):
        rows = await select_now(conn, _REGISTERED_KEYS_SQLITE, "keys", keys)
    else:
        rows = list(await conn.execute(_registered_keys(keys)))
    return {(row.scope, row.key): row for row in rows}
