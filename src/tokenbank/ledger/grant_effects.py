"""What a transaction of the per-operation path does to the wallet's grants.

Each function runs inside the transaction, after the wallet row was updated (so it is
locked) and before the header that seals the transaction: the header's trigger checks
that what the grants gained and lost equals what the wallet's non-negative balance
did, and that the wallet's grants add up to its balance. The batch kernel applies the
same rules in memory (``batch.py``); ``tests/ledger/test_group_commit.py`` keeps the
two equal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger import grants as rules
from tokenbank.ledger.grants import PAID, LiveGrant
from tokenbank.ledger.operations import Credit
from tokenbank.ledger.repository import grants as repo

# A refund gives tokens back to at most this many earlier consumptions; what is left
# over becomes a new paid grant (below).
MAX_RETURNED_CONSUMPTIONS = 1_000


def backed(balance_tokens: int) -> int:
    """The tokens grants hold for a balance: all of it, or none while overdrawn."""
    return max(balance_tokens, 0)


def live_grant(row: AnyRow, *, grant_id: int | None = None) -> LiveGrant:
    """A grant from a row of its columns; ``grant_id`` when the row's ``id`` is another
    table's (the batch kernel's lock reads wallets and grants together)."""
    return LiveGrant(
        id=int(row.id) if grant_id is None else grant_id,
        category=row.category,
        priority=int(row.priority),
        expires_at=row.expires_at,
        remaining=int(row.remaining_tokens),
    )


async def load(conn: AsyncConnection, wallet_id: int) -> list[LiveGrant]:
    return [live_grant(row) for row in await repo.live_grants(conn, [wallet_id])]


def grant_row(
    op: Credit, *, wallet_id: int, transaction_id: str, remaining: int, now: datetime
) -> dict[str, Any]:
    return {
        "wallet_id": wallet_id,
        "transaction_id": transaction_id,
        "source": op.operation_type,
        "category": op.grant_category,
        "priority": op.priority,
        "expires_at": op.expires_at,
        "amount_tokens": op.amount_tokens,
        "remaining_tokens": remaining,
        "created_at": now,
    }


def movement(
    grant_id: int,
    tokens: int,
    *,
    kind: str,
    transaction_id: str,
    now: datetime,
    returns: int | None = None,
) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "grant_id": grant_id,
        "kind": kind,
        "amount_tokens": tokens,
        "returns_movement_id": returns,
        "created_at": now,
    }


async def grant_credit(
    conn: AsyncConnection,
    op: Credit,
    wallet: AnyRow,
    *,
    transaction_id: str,
    now: datetime,
) -> None:
    """The credit's grant; if the wallet was overdrawn, the grant pays that first."""
    balance_before = wallet.balance_tokens - op.amount_tokens
    settled = min(op.amount_tokens, -balance_before) if balance_before < 0 else 0
    values = grant_row(
        op,
        wallet_id=wallet.id,
        transaction_id=transaction_id,
        remaining=op.amount_tokens - settled,
        now=now,
    )
    grant_id = await repo.insert_grant(conn, values)
    if settled:
        await repo.insert_movements(
            conn,
            [
                movement(
                    grant_id,
                    -settled,
                    kind="settle",
                    transaction_id=transaction_id,
                    now=now,
                )
            ],
        )
    if op.expires_at is not None and settled < op.amount_tokens:
        next_at = rules.earliest(wallet.next_grant_event_at, op.expires_at)
        if next_at != wallet.next_grant_event_at:
            await repo.set_next_grant_event(conn, wallet.id, next_at, now)


async def consume(
    conn: AsyncConnection,
    wallet: AnyRow,
    *,
    balance_before: int,
    transaction_id: str,
    now: datetime,
    capture: bool,
    overdraft: bool = False,
) -> None:
    """Take what the wallet's non-negative balance lost from its grants, in order.

    A capture, and usage recorded past the balance (``overdraft``), take what expired
    grants still keep for holds first; an overdraft's takes from live grants are
    ordinary consumptions.
    """
    tokens = backed(balance_before) - backed(wallet.balance_tokens)
    if tokens <= 0:
        return
    grants = await load(conn, wallet.id)
    takes = rules.plan_consumption(grants, tokens, now, capture=capture or overdraft)
    if overdraft and not capture:
        expired = [(g, take) for g, take in takes if g.expired(now)]
        live = [(g, take) for g, take in takes if not g.expired(now)]
        await _apply(conn, expired, kind="capture", transaction_id=transaction_id, now=now)
        await _apply(conn, live, kind="consume", transaction_id=transaction_id, now=now)
    else:
        kind = "capture" if capture else "consume"
        await _apply(conn, takes, kind=kind, transaction_id=transaction_id, now=now)
    for grant, take in takes:
        grant.remaining -= take
    next_at = rules.next_event_at(grants)
    if next_at != wallet.next_grant_event_at:
        await repo.set_next_grant_event(conn, wallet.id, next_at, now)


async def give_back(
    conn: AsyncConnection,
    wallet: AnyRow,
    *,
    balance_before: int,
    refund_of: str | None,
    transaction_id: str,
    now: datetime,
) -> None:
    """A refund: tokens go back to the grants they were taken from, newest taking
    first (the named debit's, then the wallet's latest); the rest, if any (usage from
    before grants existed), becomes a paid grant that never expires."""
    tokens = backed(wallet.balance_tokens) - backed(balance_before)
    if tokens <= 0:
        return
    rows = []
    if refund_of is not None:
        rows = await repo.unreturned_consumptions(
            conn, wallet.id, transaction_id=refund_of, limit=MAX_RETURNED_CONSUMPTIONS
        )
    named = {row.id for row in rows}
    rows += [
        row
        for row in await repo.unreturned_consumptions(
            conn, wallet.id, transaction_id=None, limit=MAX_RETURNED_CONSUMPTIONS
        )
        if row.id not in named
    ]
    grant_of = {int(row.id): int(row.grant_id) for row in rows}
    shares = rules.returned_shares([(int(r.id), int(r.unreturned)) for r in rows], tokens)
    movements = [
        movement(
            grant_of[movement_id],
            share,
            kind="return",
            transaction_id=transaction_id,
            now=now,
            returns=movement_id,
        )
        for movement_id, share in shares
    ]
    if movements:
        deltas = [{"grant_id": m["grant_id"], "delta": m["amount_tokens"]} for m in movements]
        await repo.add_to_grants(conn, deltas)
        await repo.insert_movements(conn, movements)
    left = tokens - sum(share for _, share in shares)
    if left > 0:
        await _refund_grant(conn, wallet.id, left, transaction_id=transaction_id, now=now)
    # A grant given tokens back may have expired meanwhile: look at the wallet again.
    await repo.set_next_grant_event(conn, wallet.id, await _next_event(conn, wallet.id), now)


async def _refund_grant(
    conn: AsyncConnection, wallet_id: int, tokens: int, *, transaction_id: str, now: datetime
) -> None:
    values = {
        "wallet_id": wallet_id,
        "transaction_id": transaction_id,
        "source": "refund",
        "category": PAID,
        "priority": rules.DEFAULT_GRANT_PRIORITY,
        "expires_at": None,
        "amount_tokens": tokens,
        "remaining_tokens": tokens,
        "created_at": now,
    }
    await repo.insert_grant(conn, values)


async def _next_event(conn: AsyncConnection, wallet_id: int) -> datetime | None:
    return rules.next_event_at(await load(conn, wallet_id))


async def expire(
    conn: AsyncConnection,
    takes: list[tuple[LiveGrant, int]],
    *,
    transaction_id: str,
    now: datetime,
) -> None:
    """The movements of an expiry transaction (its wallet update is the caller's)."""
    await _apply(conn, takes, kind="expire", transaction_id=transaction_id, now=now)


async def claw_back(
    conn: AsyncConnection,
    takes: list[tuple[LiveGrant, int]],
    *,
    transaction_id: str,
    now: datetime,
) -> None:
    """The movements of a clawback transaction (its wallet update is the caller's)."""
    await _apply(conn, takes, kind="clawback", transaction_id=transaction_id, now=now)


async def _apply(
    conn: AsyncConnection,
    takes: list[tuple[LiveGrant, int]],
    *,
    kind: str,
    transaction_id: str,
    now: datetime,
) -> None:
    if not takes:
        return
    await repo.add_to_grants(conn, [{"grant_id": g.id, "delta": -take} for g, take in takes])
    await repo.insert_movements(
        conn,
        [
            movement(
                grant.id,
                -take,
                kind=kind,
                transaction_id=transaction_id,
                now=now,
            )
            for grant, take in takes
        ],
    )
