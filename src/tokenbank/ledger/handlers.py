"""How each operation changes the books, inside a transaction the writer owns.

A handler returns a result; when the result is a refusal the writer rolls back
whatever the handler wrote, so a refusal never leaves a trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger import grant_effects, scheduled
from tokenbank.ledger import grants as grant_rules
from tokenbank.ledger.accounts import (
    CLAWBACK,
    EXPIRY,
    REFUND,
    TOKENS_CLAWED_BACK,
    TOKENS_CONSUMED,
    TOKENS_EXPIRED,
    credit_source_account,
)
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.grants import LiveGrant
from tokenbank.ledger.idempotency import key_row
from tokenbank.ledger.operations import (
    CaptureHold,
    ClawBack,
    Credit,
    Debit,
    LedgerOperation,
    OpenWallet,
    PlaceHold,
    Refund,
    VoidHold,
)
from tokenbank.ledger.repository import grants as grant_repo
from tokenbank.ledger.repository import scheduled as scheduled_repo
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.results import (
    ClawbackResult,
    HoldResult,
    OperationResult,
    WalletResult,
    refused_clawback,
    refused_hold,
    refused_operation,
)

EXPIRED_HOLDS_PER_WALLET_LIMIT = 100


def new_transaction_id() -> str:
    return str(uuid.uuid4())


def new_hold_id() -> str:
    return f"hold_{uuid.uuid4().hex}"


def transaction_header(
    op: LedgerOperation,
    *,
    transaction_id: str,
    wallet_id: int,
    kind: str,
    operation_type: str,
    now: datetime,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": transaction_id,
        "wallet_id": wallet_id,
        "kind": kind,
        "operation_type": operation_type,
        "description": op.description,
        "metadata": op.metadata,
        "idempotency_scope": op.idempotency_scope,
        "idempotency_key": op.idempotency_key,
        "request_hash": op.request_hash() if op.idempotency_key else None,
        "created_at": now,
        **extra,
    }


# What a transaction does to the wallet's grants: run after its entries, before its
# header (see grant_effects); it takes the transaction id.
GrantEffect = Callable[[str], Awaitable[None]]


async def _record(
    conn: AsyncConnection,
    op: LedgerOperation,
    wallet: AnyRow,
    *,
    amount_tokens: int,
    system_account: str,
    header: dict[str, Any],
    now: datetime,
    grant_effect: GrantEffect,
) -> OperationResult:
    """Write the two entries and the grants' side, then the header that seals them."""
    transaction_id = header["id"]
    entry_id = await repo.insert_entries(
        conn,
        transaction_id=transaction_id,
        wallet_id=wallet.id,
        amount_tokens=amount_tokens,
        balance_after=wallet.balance_tokens,
        system_account=system_account,
        now=now,
    )
    await grant_effect(transaction_id)
    await repo.insert_transaction(conn, header)
    return OperationResult(
        success=True,
        new_balance=wallet.balance_tokens,
        ledger_entry_id=entry_id,
        transaction_id=transaction_id,
        available_tokens=wallet.balance_tokens - wallet.held_tokens,
        user_id=getattr(op, "user_id", None),
    )


async def open_wallet(conn: AsyncConnection, op: OpenWallet, now: datetime) -> WalletResult:
    wallet_id = await repo.insert_wallet(conn, op.user_id, now)
    if wallet_id is None:
        existing = await repo.wallet_by_user(conn, op.user_id)
        balance = existing.balance_tokens if existing is not None else 0
        return WalletResult(
            success=True,
            user_id=op.user_id,
            created=False,
            new_balance=balance,
            welcome_bonus_tokens=0,
        )
    balance = 0
    if op.welcome_bonus_tokens > 0:
        bonus = Credit(
            user_id=op.user_id,
            amount_tokens=op.welcome_bonus_tokens,
            operation_type="bonus",
            description="Welcome bonus",
            expires_at=op.welcome_bonus_expires_at,
        )
        balance = (await credit(conn, bonus, now)).new_balance or 0
    return WalletResult(
        success=True,
        user_id=op.user_id,
        created=True,
        new_balance=balance,
        welcome_bonus_tokens=op.welcome_bonus_tokens,
    )


# The debit and credit rules are written twice: here as SQL (conditional updates in
# repository/writes.py) for one operation, and in batch.py (_debit, _credit) in memory
# for a locked batch. Change one, change the other: tests/ledger/test_group_commit.py
# (test_a_batch_equals_the_same_operations_one_at_a_time) fails when they differ.
async def credit(conn: AsyncConnection, op: Credit, now: datetime) -> OperationResult:
    if op.scheduled(now):
        return await scheduled.schedule_credit(conn, op, now)
    wallet = await repo.credit_wallet(conn, op.user_id, op.amount_tokens, now)
    if wallet is None:
        return await _explain_refusal(conn, op.user_id, op.amount_tokens)
    header = transaction_header(
        op,
        transaction_id=new_transaction_id(),
        wallet_id=wallet.id,
        kind="credit",
        operation_type=op.operation_type,
        now=now,
    )
    return await _record(
        conn,
        op,
        wallet,
        amount_tokens=op.amount_tokens,
        system_account=credit_source_account(op.operation_type),
        header=header,
        now=now,
        grant_effect=lambda transaction_id: grant_effects.grant_credit(
            conn, op, wallet, transaction_id=transaction_id, now=now
        ),
    )


async def debit(conn: AsyncConnection, op: Debit, now: datetime) -> OperationResult:
    """A refusal may be time's doing (an expired hold, an expired grant): the writer
    then catches the wallet up and tries once more."""
    if op.allow_overdraft:
        # An expired hold must not make recorded usage look like an overdraft.
        await catch_up(conn, op.user_id, now)
        wallet = await repo.overdraw_wallet(conn, op.user_id, op.amount_tokens, now)
    else:
        wallet = await repo.debit_wallet(conn, op.user_id, op.amount_tokens, now)
    if wallet is None:
        return await _explain_refusal(conn, op.user_id, op.amount_tokens)
    header = transaction_header(
        op,
        transaction_id=new_transaction_id(),
        wallet_id=wallet.id,
        kind="debit",
        operation_type=op.operation_type,
        now=now,
        pricing=op.pricing,
    )
    return await _record(
        conn,
        op,
        wallet,
        amount_tokens=-op.amount_tokens,
        system_account=TOKENS_CONSUMED,
        header=header,
        now=now,
        grant_effect=lambda transaction_id: grant_effects.consume(
            conn,
            wallet,
            balance_before=wallet.balance_tokens + op.amount_tokens,
            transaction_id=transaction_id,
            now=now,
            capture=False,
            overdraft=op.allow_overdraft,
        ),
    )


async def refund(conn: AsyncConnection, op: Refund, now: datetime) -> OperationResult:
    debited_tokens = None
    if op.refund_of is not None:
        debited = await repo.debit_for_refund(conn, op.refund_of)
        if debited is None or debited.user_id != op.user_id:
            return refused_operation(ErrorCode.DEBIT_NOT_FOUND, user_id=op.user_id)
        debited_tokens = int(debited.debited_tokens)
    wallet = await repo.refund_wallet(conn, op.user_id, op.amount_tokens, now)
    if wallet is None:
        return await _explain_refund_refusal(conn, op)
    # The wallet row is locked now, so the sum below sees every committed refund.
    if debited_tokens is not None and op.refund_of is not None:
        remaining = debited_tokens - await repo.refunded_tokens(conn, op.refund_of)
        if op.amount_tokens > remaining:
            return refused_operation(
                ErrorCode.REFUND_EXCEEDS_DEBIT,
                user_id=op.user_id,
                available_tokens=remaining,
                required_tokens=op.amount_tokens,
            )
    header = transaction_header(
        op,
        transaction_id=new_transaction_id(),
        wallet_id=wallet.id,
        kind="refund",
        operation_type=REFUND,
        now=now,
        refund_of_id=op.refund_of,
    )
    return await _record(
        conn,
        op,
        wallet,
        amount_tokens=op.amount_tokens,
        system_account=TOKENS_CONSUMED,
        header=header,
        now=now,
        grant_effect=lambda transaction_id: grant_effects.give_back(
            conn,
            wallet,
            balance_before=wallet.balance_tokens - op.amount_tokens,
            refund_of=op.refund_of,
            transaction_id=transaction_id,
            now=now,
        ),
    )


async def place_hold(conn: AsyncConnection, op: PlaceHold, now: datetime) -> HoldResult:
    wallet = await repo.reserve_tokens(conn, op.user_id, op.amount_tokens, now)
    if wallet is None:
        refusal = await _explain_refusal(conn, op.user_id, op.amount_tokens)
        return refused_hold(
            refusal.error_code or ErrorCode.INSUFFICIENT_TOKENS,
            user_id=op.user_id,
            available_tokens=refusal.available_tokens,
            required_tokens=refusal.required_tokens,
        )
    hold_id = new_hold_id()
    expires_at = now + timedelta(seconds=op.ttl_seconds)
    await repo.insert_hold(conn, hold_row(op, hold_id, wallet.id, expires_at, now))
    return placed_hold(op, hold_id, expires_at, wallet.balance_tokens, wallet.held_tokens)


def placed_hold(
    op: PlaceHold, hold_id: str, expires_at: datetime, balance_tokens: int, held_tokens: int
) -> HoldResult:
    """The answer to a hold just placed (``held_tokens`` includes it)."""
    return HoldResult(
        success=True,
        hold_id=hold_id,
        status="pending",
        amount_tokens=op.amount_tokens,
        expires_at=expires_at,
        new_balance=balance_tokens,
        available_tokens=balance_tokens - held_tokens,
        user_id=op.user_id,
    )


def hold_row(
    op: PlaceHold, hold_id: str, wallet_id: int, expires_at: datetime, now: datetime
) -> dict[str, Any]:
    """The row of a new pending hold."""
    return {
        "id": hold_id,
        "wallet_id": wallet_id,
        "amount_tokens": op.amount_tokens,
        "status": "pending",
        "operation_type": op.operation_type,
        "description": op.description,
        "metadata": op.metadata,
        "idempotency_scope": op.idempotency_scope,
        "idempotency_key": op.idempotency_key,
        "request_hash": op.request_hash() if op.idempotency_key else None,
        "expires_at": expires_at,
        "created_at": now,
    }


def hold_result(hold: AnyRow, **overrides: Any) -> HoldResult:
    fields: dict[str, Any] = {
        "success": True,
        "hold_id": hold.id,
        "status": hold.status,
        "amount_tokens": hold.amount_tokens,
        "captured_tokens": hold.captured_tokens,
        "expires_at": hold.expires_at,
        "user_id": hold.user_id,
    }
    return HoldResult(**(fields | overrides))


def _unusable_hold(hold: AnyRow | None, hold_id: str, now: datetime) -> HoldResult | None:
    if hold is None:
        return refused_hold(ErrorCode.HOLD_NOT_FOUND, hold_id=hold_id)
    if hold.status == "expired" or (hold.status == "pending" and hold.expires_at <= now):
        return refused_hold(ErrorCode.HOLD_EXPIRED, hold_id=hold_id, status=hold.status)
    if hold.status != "pending":
        return refused_hold(ErrorCode.HOLD_NOT_PENDING, hold_id=hold_id, status=hold.status)
    return None


async def capture_hold(conn: AsyncConnection, op: CaptureHold, now: datetime) -> HoldResult:
    hold = await repo.hold_by_id(conn, op.hold_id)
    if hold is not None and hold.status == "captured":
        return await _replay_capture(conn, hold, op)
    refusal = _unusable_hold(hold, op.hold_id, now)
    if refusal is not None or hold is None:
        return refusal or refused_hold(ErrorCode.HOLD_NOT_FOUND, hold_id=op.hold_id)
    if hold.next_grant_event_at is not None and hold.next_grant_event_at <= now:
        # What expired grants hold beyond what the holds need leaves first, so that
        # the capture (expired remainders first) takes only tokens kept for holds.
        await expire_grants(conn, hold.user_id, now)
    if not await repo.resolve_hold(
        conn, hold.id, status="captured", captured_tokens=op.amount_tokens, now=now
    ):
        # Another request resolved it between our read and our write: answer as it did.
        return await capture_hold(conn, op, now)
    wallet = await repo.settle_hold(
        conn,
        hold.wallet_id,
        held_tokens=hold.amount_tokens,
        captured_tokens=op.amount_tokens,
        now=now,
    )
    captured = hold_result(hold, status="captured", captured_tokens=op.amount_tokens)
    if op.amount_tokens == 0:
        return _with_wallet(captured, wallet)
    header = transaction_header(
        op,
        transaction_id=new_transaction_id(),
        wallet_id=hold.wallet_id,
        kind="debit",
        operation_type=hold.operation_type,
        now=now,
        hold_id=hold.id,
        pricing=op.pricing,
    )
    recorded = await _record(
        conn,
        op,
        wallet,
        amount_tokens=-op.amount_tokens,
        system_account=TOKENS_CONSUMED,
        header=header,
        now=now,
        grant_effect=lambda transaction_id: grant_effects.consume(
            conn,
            wallet,
            balance_before=wallet.balance_tokens + op.amount_tokens,
            transaction_id=transaction_id,
            now=now,
            capture=True,
        ),
    )
    return _with_wallet(
        captured,
        wallet,
        ledger_entry_id=recorded.ledger_entry_id,
        transaction_id=recorded.transaction_id,
    )


def _with_wallet(result: HoldResult, wallet: AnyRow, **fields: Any) -> HoldResult:
    return replace(
        result,
        new_balance=wallet.balance_tokens,
        available_tokens=wallet.balance_tokens - wallet.held_tokens,
        **fields,
    )


async def _replay_capture(conn: AsyncConnection, hold: AnyRow, op: CaptureHold) -> HoldResult:
    if hold.captured_tokens != op.amount_tokens:
        return refused_hold(ErrorCode.HOLD_NOT_PENDING, hold_id=hold.id, status=hold.status)
    recorded = await repo.transaction_by_hold(conn, hold.id)
    if recorded is None:
        return hold_result(hold, replayed=True)
    return hold_result(
        hold,
        replayed=True,
        new_balance=recorded.balance_after,
        ledger_entry_id=recorded.entry_id,
        transaction_id=recorded.id,
    )


async def void_hold(conn: AsyncConnection, op: VoidHold, now: datetime) -> HoldResult:
    hold = await repo.hold_by_id(conn, op.hold_id)
    if hold is None:
        return refused_hold(ErrorCode.HOLD_NOT_FOUND, hold_id=op.hold_id)
    if hold.status in ("voided", "expired"):
        # Releasing is what void asks for, and it has happened: a repeat is a success.
        return hold_result(hold, replayed=True)
    if hold.status != "pending":
        return refused_hold(ErrorCode.HOLD_NOT_PENDING, hold_id=hold.id, status=hold.status)
    if not await repo.resolve_hold(conn, hold.id, status="voided", now=now):
        return await void_hold(conn, op, now)
    wallet = await repo.release_reservation(conn, hold.wallet_id, hold.amount_tokens, now)
    return _with_wallet(hold_result(hold, status="voided"), wallet)


async def release_expired_holds(
    conn: AsyncConnection, now: datetime, *, limit: int, wallet_id: int | None = None
) -> list[str]:
    """Expire pending holds whose time is up; the user ids whose held amount changed."""
    released: list[str] = []
    expired = await repo.expired_holds(conn, now, limit=limit, wallet_id=wallet_id)
    if wallet_id is None and expired:
        # Found in expiry order, released wallet by wallet: their wallets are locked
        # first, in id order, as a batch locks them (else the two can deadlock).
        await repo.lock_wallets_by_id(conn, sorted({hold.wallet_id for hold in expired}))
    for hold in expired:
        if await repo.resolve_hold(conn, hold.id, status="expired", now=now):
            await repo.release_reservation(conn, hold.wallet_id, hold.amount_tokens, now)
            released.append(hold.id)
    return released


async def catch_up(conn: AsyncConnection, user_id: str, now: datetime) -> bool:
    """Apply what time did to a wallet before it spends: release its expired holds,
    then expire its expired grants. Whether anything changed (worth a retry)."""
    wallet = await repo.wallet_by_user(conn, user_id)
    if wallet is None:
        return False
    released = False
    if wallet.held_tokens > 0:
        released = bool(
            await release_expired_holds(
                conn, now, limit=EXPIRED_HOLDS_PER_WALLET_LIMIT, wallet_id=wallet.id
            )
        )
    applied = await apply_scheduled_credits(conn, wallet, now)
    due = wallet.next_grant_event_at is not None and wallet.next_grant_event_at <= now
    expired = due and await expire_grants(conn, user_id, now)
    return released or applied or expired


async def apply_scheduled_credits(conn: AsyncConnection, wallet: AnyRow, now: datetime) -> bool:
    """Apply the wallet's scheduled credits whose time has come, each as an ordinary
    credit; whether any was applied. A credit its wallet refuses (closed) waits."""
    if not await scheduled_repo.has_due(conn, wallet.id, now):
        return False
    await repo.lock_wallets(conn, [wallet.user_id])
    applied = False
    for row in await scheduled_repo.due_for_wallet(conn, wallet.id, now):
        result = await credit(conn, scheduled.credit_for(row, wallet.user_id), now)
        if not result.success or result.transaction_id is None:
            continue
        if not await scheduled_repo.mark_applied(conn, int(row.id), result.transaction_id):
            raise RuntimeError(f"scheduled credit {row.id} was applied by another writer")
        applied = True
    return applied


async def expire_grants(conn: AsyncConnection, user_id: str, now: datetime) -> bool:
    """Expire what a wallet's expired grants hold, except what its holds need, as one
    ``expiry`` transaction; set when to look again. Whether anything changed."""
    locked = await repo.lock_wallets(conn, [user_id])
    wallet = locked.get(user_id)
    if wallet is None:
        return False
    grants = await grant_effects.load(conn, wallet.id)
    spare = wallet.balance_tokens - wallet.held_tokens
    takes = grant_rules.plan_expiry(grants, now, spare_tokens=spare)
    if not takes:
        next_at = grant_rules.next_event_at(grants)
        if next_at == wallet.next_grant_event_at:
            return False
        await grant_repo.set_next_grant_event(conn, wallet.id, next_at, now)
        return True
    await write_expiry(conn, wallet, grants, takes, now)
    return True


async def write_expiry(
    conn: AsyncConnection,
    wallet: AnyRow,
    grants: list[LiveGrant],
    takes: list[tuple[LiveGrant, int]],
    now: datetime,
    *,
    description: str = "Expired tokens",
) -> None:
    """Take ``takes`` out of the wallet's grants as one ``expiry`` transaction;
    ``grants`` are all its live grants (to know when to look again)."""
    transaction_id = new_transaction_id()
    await _take_unspent(
        conn,
        wallet,
        grants,
        takes,
        system_account=TOKENS_EXPIRED,
        header=expiry_header(transaction_id, wallet.id, now, description=description),
        grant_effect=lambda transaction_id: grant_effects.expire(
            conn, takes, transaction_id=transaction_id, now=now
        ),
        now=now,
    )


async def _take_unspent(
    conn: AsyncConnection,
    wallet: AnyRow,
    grants: list[LiveGrant],
    takes: list[tuple[LiveGrant, int]],
    *,
    system_account: str,
    header: dict[str, Any],
    grant_effect: GrantEffect,
    now: datetime,
) -> int:
    """Write a transaction that takes tokens the wallet did not spend out of its
    grants (an expiry, a clawback): the wallet, the entries, the grants, the header.
    ``grants`` are all its live grants (to know when to look again). The balance after."""
    tokens = sum(take for _, take in takes)
    taken = {grant.id: take for grant, take in takes}
    left = [replace(grant, remaining=grant.remaining - taken.get(grant.id, 0)) for grant in grants]
    updated = await repo.remove_from_wallet(
        conn, wallet.id, tokens, next_event_at=grant_rules.next_event_at(left), now=now
    )
    await repo.insert_entries(
        conn,
        transaction_id=header["id"],
        wallet_id=wallet.id,
        amount_tokens=-tokens,
        balance_after=updated.balance_tokens,
        system_account=system_account,
        now=now,
    )
    await grant_effect(header["id"])
    await repo.insert_transaction(conn, header)
    return int(updated.balance_tokens)


def expiry_header(
    transaction_id: str, wallet_id: int, now: datetime, *, description: str = "Expired tokens"
) -> dict[str, Any]:
    return {
        "id": transaction_id,
        "wallet_id": wallet_id,
        "kind": EXPIRY,
        "operation_type": EXPIRY,
        "description": description,
        "metadata": None,
        "idempotency_scope": "",
        "idempotency_key": None,
        "request_hash": None,
        "created_at": now,
    }


async def claw_back(conn: AsyncConnection, op: ClawBack, now: datetime) -> ClawbackResult:
    """Take back what is left of one credit's grant, within what the wallet's pending
    holds leave spare (decision 13); taking nothing writes no transaction.

    It runs in its caller's transaction (the writer's, or the payments code's), so it
    keeps its idempotency key itself: requests on one wallet queue on its lock, then
    the second finds the first's key; a race on a key from another wallet ends in a
    savepoint, and is answered as a conflict.
    """
    locked = (await repo.lock_wallets(conn, [op.user_id])).get(op.user_id)
    earlier = await _clawback_replay(conn, op)
    if earlier is not None:
        return earlier
    if locked is None:
        return refused_clawback(ErrorCode.WALLET_NOT_FOUND, user_id=op.user_id)
    if await repo.credit_wallet_id(conn, op.credit_transaction_id) != locked.id:
        return refused_clawback(ErrorCode.CREDIT_NOT_FOUND, user_id=op.user_id)
    # Time's effects first: expired holds free tokens; an expired grant's remainder
    # leaves as expiry, not as a clawback.
    await catch_up(conn, op.user_id, now)
    try:
        async with conn.begin_nested():
            return await _write_clawback(conn, op, now)
    except IntegrityError:
        earlier = await _clawback_replay(conn, op)
        if earlier is None:
            raise
        return earlier


async def _write_clawback(conn: AsyncConnection, op: ClawBack, now: datetime) -> ClawbackResult:
    wallet = (await repo.lock_wallets(conn, [op.user_id]))[op.user_id]
    grants = await grant_effects.load(conn, wallet.id)
    of_credit = await grant_repo.grant_ids_of(conn, op.credit_transaction_id)
    takes = grant_rules.plan_clawback(
        [grant for grant in grants if grant.id in of_credit],
        op.amount_tokens,
        spare_tokens=wallet.balance_tokens - wallet.held_tokens,
    )
    result = (
        await _record_clawback(conn, op, wallet, grants, takes, now)
        if takes
        else _clawed(op, None, 0, int(wallet.balance_tokens))
    )
    if op.idempotency_key is not None:
        # Taking nothing is an answer too: a retry must not take what a hold frees later.
        await repo.record_keys(conn, [key_row(op, CLAWBACK, now)])
    return result


async def _record_clawback(
    conn: AsyncConnection,
    op: ClawBack,
    wallet: AnyRow,
    grants: list[LiveGrant],
    takes: list[tuple[LiveGrant, int]],
    now: datetime,
) -> ClawbackResult:
    header = transaction_header(
        op,
        transaction_id=new_transaction_id(),
        wallet_id=wallet.id,
        kind=CLAWBACK,
        operation_type=CLAWBACK,
        now=now,
        clawback_of_id=op.credit_transaction_id,
    )
    balance = await _take_unspent(
        conn,
        wallet,
        grants,
        takes,
        system_account=TOKENS_CLAWED_BACK,
        header=header,
        grant_effect=lambda transaction_id: grant_effects.claw_back(
            conn, takes, transaction_id=transaction_id, now=now
        ),
        now=now,
    )
    return _clawed(op, header["id"], sum(take for _, take in takes), balance)


def _clawed(
    op: ClawBack, transaction_id: str | None, clawed_tokens: int, balance: int, **fields: Any
) -> ClawbackResult:
    return ClawbackResult(
        success=True,
        user_id=op.user_id,
        transaction_id=transaction_id,
        clawed_tokens=clawed_tokens,
        not_clawed_tokens=op.amount_tokens - clawed_tokens,
        balance_after=balance,
        **fields,
    )


async def _clawback_replay(conn: AsyncConnection, op: ClawBack) -> ClawbackResult | None:
    """The first answer to the clawback's key, if a request with it committed; a
    conflict if that request was another."""
    if op.idempotency_key is None:
        return None
    registered = await repo.registered_key(conn, op.idempotency_scope, op.idempotency_key)
    if registered is None:
        return None
    if registered.request_hash != op.request_hash():
        return refused_clawback(ErrorCode.IDEMPOTENCY_CONFLICT, user_id=op.user_id)
    found = await repo.clawback_by_key(conn, op.idempotency_scope, op.idempotency_key)
    if found is not None:
        clawed = -int(found.amount_tokens)
        return _clawed(op, found.id, clawed, int(found.balance_after), replayed=True)
    # It took nothing and left no transaction: the balance is today's.
    wallet = await repo.wallet_by_user(conn, op.user_id)
    balance = int(wallet.balance_tokens) if wallet is not None else 0
    return _clawed(op, None, 0, balance, replayed=True)


async def _explain_refusal(
    conn: AsyncConnection, user_id: str, amount_tokens: int
) -> OperationResult:
    wallet = await repo.wallet_by_user(conn, user_id)
    if wallet is None:
        return refused_operation(ErrorCode.WALLET_NOT_FOUND, user_id=user_id)
    available = wallet.balance_tokens - wallet.held_tokens
    fields = {"user_id": user_id, "available_tokens": available, "required_tokens": amount_tokens}
    if wallet.status == "closed":
        return refused_operation(ErrorCode.WALLET_CLOSED, **fields)
    if wallet.status == "suspended":
        return refused_operation(ErrorCode.WALLET_SUSPENDED, **fields)
    return refused_operation(ErrorCode.INSUFFICIENT_TOKENS, **fields)


async def _explain_refund_refusal(conn: AsyncConnection, op: Refund) -> OperationResult:
    wallet = await repo.wallet_by_user(conn, op.user_id)
    if wallet is None:
        return refused_operation(ErrorCode.WALLET_NOT_FOUND, user_id=op.user_id)
    if wallet.status == "closed":
        return refused_operation(ErrorCode.WALLET_CLOSED, user_id=op.user_id)
    if op.refund_of is not None:
        # Name the tighter bound: what remains of the named debit, when it is the cause.
        debited = await repo.debit_for_refund(conn, op.refund_of)
        remaining = int(debited.debited_tokens) if debited is not None else 0
        remaining -= await repo.refunded_tokens(conn, op.refund_of)
        if op.amount_tokens > remaining:
            return refused_operation(
                ErrorCode.REFUND_EXCEEDS_DEBIT,
                user_id=op.user_id,
                available_tokens=remaining,
                required_tokens=op.amount_tokens,
            )
    return refused_operation(
        ErrorCode.REFUND_EXCEEDS_SPENT,
        user_id=op.user_id,
        available_tokens=wallet.spent_tokens,
        required_tokens=op.amount_tokens,
    )
