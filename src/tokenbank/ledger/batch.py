"""The batch kernel: a whole batch of debits, credits, holds and captures in a few
statements.

Group commit hands the writer many operations at once. Applying them one by one
costs five round trips each (savepoint, update, entries, header, release), a
capture twelve; this kernel instead

1. reads and locks the holds the batch captures (one SELECT ... FOR UPDATE, only
   when it captures), then every wallet of the batch (one SELECT ... FOR UPDATE,
   in id order, so concurrent batches never deadlock);
2. looks up the batch's idempotency keys (one SELECT);
3. decides each operation in order, in memory, with exactly the rules of the
   per-operation handlers (several operations on one wallet are judged one after
   another against the running balance; holds and captures in ``batch_holds``);
4. writes the wallets' relative updates, the holds, the grants, the entries, the
   keys and the headers (one statement on PostgreSQL, ``batch_postgres``; sqlite3's
   ``executemany`` on SQLite, ``batch_sqlite``).

The database still judges the result: the CHECK constraints see the final rows
and the triggers see every transaction. Anything the kernel does not settle
plainly (a debit on a wallet with holds, which may have expired; a refund; a void;
a refusal that catching up might change; a replayed key) is left to the
per-operation path, in the same database transaction, and every later operation
on that wallet goes there too, so each wallet's operations keep their order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import is_sqlite
from tokenbank.db.rows import AnyRow
from tokenbank.ledger import batch_holds, grant_effects
from tokenbank.ledger import grants as grant_rules
from tokenbank.ledger.accounts import TOKENS_CONSUMED, credit_source_account
from tokenbank.ledger.batch_state import (
    KernelBatch,
    KernelWallet,
    consume,
    defer,
    record,
    wallets_with_grants,
)
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.operations import CaptureHold, Credit, Debit, PlaceHold
from tokenbank.ledger.repository import batch_holds as hold_repo
from tokenbank.ledger.repository import batch_postgres, batch_sqlite
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.results import HoldResult, LedgerResult, OperationResult, refused_operation

FastOperation = Credit | Debit | PlaceHold | CaptureHold
# Given the users whose wallets the kernel now holds locked, more operations on them
# to settle in the same batch, at positions after the others (the writer's view of
# group commit's joiner).
KernelJoin = Callable[[frozenset[str]], list[tuple[int, FastOperation]]]
FAST_TYPES = (Credit, Debit, PlaceHold, CaptureHold)
STATUS_REFUSALS = {"suspended": ErrorCode.WALLET_SUSPENDED, "closed": ErrorCode.WALLET_CLOSED}


async def apply_fast(
    conn: AsyncConnection,
    operations: list[tuple[int, FastOperation]],
    now: datetime,
    slow_by_user: dict[str, int] | None = None,
    join: KernelJoin | None = None,
) -> tuple[dict[int, LedgerResult], list[int]]:
    """Settle what it can; the results by position, and the positions it left.
    ``slow_by_user``: where each user's first operation the kernel never takes is (a
    capture's user is known only once its hold is read: one after it waits its turn).
    ``join``: called once the wallets are locked, with their users; what it returns
    (later positions) is settled with the rest."""
    hold_ids = sorted({op.hold_id for _, op in operations if isinstance(op, CaptureHold)})
    holds = await hold_repo.lock_holds(conn, hold_ids) if hold_ids else {}
    users = {user for _, op in operations if (user := _user_of(op, holds)) is not None}
    locked = await repo.lock_wallets_with_grants(conn, sorted(users))
    wallets = wallets_with_grants(locked)
    if join is not None:
        # Waiting for those locks (another process's batch held one), more operations
        # on the same wallets queued: they need no lock but these (issue 15).
        operations = operations + join(frozenset(wallets))
    keys = sorted({_key(op) for _, op in operations if op.idempotency_key is not None})
    committed = await repo.registered_keys(conn, keys) if keys else {}
    batch = KernelBatch(now=now)
    for position, op in operations:
        user = _user_of(op, holds)
        wallet = wallets.get(user) if user is not None else None
        if isinstance(op, PlaceHold | CaptureHold):
            _decide_hold(batch, position, op, wallet, holds, committed, slow_by_user or {})
        else:
            _decide(batch, position, op, wallet, committed)
        # A key this batch applies (not one it replayed) answers its later repeats.
        decided = batch.results.get(position)
        fresh = decided is not None and decided.success and not decided.replayed
        if op.idempotency_key is not None and fresh:
            batch.seen_keys[_key(op)] = (op.request_hash(), position)
    await _write(conn, batch, wallets)
    return batch.results, batch.deferred


def _key(op: FastOperation) -> tuple[str, str]:
    return (op.idempotency_scope, op.idempotency_key or "")


def _user_of(op: FastOperation, holds: dict[str, AnyRow]) -> str | None:
    """Whose wallet the operation changes (a capture's: its hold's, if found)."""
    if isinstance(op, CaptureHold):
        hold = holds.get(op.hold_id)
        return None if hold is None else str(hold.user_id)
    return op.user_id


def _decide_hold(
    batch: KernelBatch,
    position: int,
    op: PlaceHold | CaptureHold,
    wallet: KernelWallet | None,
    holds: dict[str, AnyRow],
    committed: dict[tuple[str, str], AnyRow],
    slow_by_user: dict[str, int],
) -> None:
    """A hold or a capture: in the kernel when plain (batch_holds), else per
    operation, where refusals, replays and catching up are decided."""
    keyed = op.idempotency_key is not None
    if (
        wallet is None
        or wallet.deferred
        or (keyed and (_key(op) in committed or _key(op) in batch.seen_keys))
        or (isinstance(op, CaptureHold) and _waits_its_turn(position, wallet, slow_by_user))
    ):
        if wallet is not None:
            defer(batch, position, wallet)
        else:
            batch.deferred.append(position)
        return
    if isinstance(op, PlaceHold):
        batch_holds.place_hold(batch, position, op, wallet)
    else:
        batch_holds.capture(batch, position, op, wallet, holds[op.hold_id])


def _waits_its_turn(position: int, wallet: KernelWallet, slow_by_user: dict[str, int]) -> bool:
    """An operation the kernel leaves comes before this capture on its wallet."""
    first = slow_by_user.get(wallet.user_id)
    return first is not None and first < position


def _decide(
    batch: KernelBatch,
    position: int,
    op: Credit | Debit,
    wallet: KernelWallet | None,
    committed: dict[tuple[str, str], AnyRow],
) -> None:
    if wallet is not None and wallet.deferred:
        batch.deferred.append(position)
        return
    if op.idempotency_key is not None and _answered_by_key(batch, position, op, committed):
        return
    if wallet is None:
        batch.results[position] = refused_operation(ErrorCode.WALLET_NOT_FOUND, user_id=op.user_id)
    elif isinstance(op, Credit):
        _credit(batch, position, op, wallet)
    else:
        _debit(batch, position, op, wallet)


def _answered_by_key(
    batch: KernelBatch, position: int, op: Credit | Debit, committed: dict[tuple[str, str], AnyRow]
) -> bool:
    """A key already committed, or used earlier in this batch, answers the operation."""
    key = _key(op)
    if key in committed:
        row = committed[key]
        if row.request_hash != op.request_hash() or row.id is None:
            batch.results[position] = refused_operation(
                ErrorCode.IDEMPOTENCY_CONFLICT, user_id=row.user_id
            )
        else:
            batch.results[position] = OperationResult(
                success=True,
                new_balance=row.balance_after,
                ledger_entry_id=row.entry_id,
                transaction_id=row.id,
                replayed=True,
                user_id=row.user_id,
            )
        return True
    if key in batch.seen_keys:
        request_hash, first = batch.seen_keys[key]
        if request_hash != op.request_hash():
            batch.results[position] = refused_operation(
                ErrorCode.IDEMPOTENCY_CONFLICT, user_id=op.user_id
            )
        else:
            batch.results[position] = _replay_of(batch, first)
            batch.pending_entry.setdefault(position, batch.pending_entry.get(first, ""))
        return True
    return False


def _replay_of(batch: KernelBatch, first: int) -> OperationResult:
    original = batch.results[first]
    if not isinstance(original, OperationResult):
        raise TypeError("a fast-path result must be an OperationResult")
    return OperationResult(
        success=True,
        new_balance=original.new_balance,
        transaction_id=original.transaction_id,
        replayed=True,
        user_id=original.user_id,
    )


def _refuse_for_status(
    batch: KernelBatch, position: int, wallet: KernelWallet, amount: int
) -> bool:
    code = STATUS_REFUSALS.get(wallet.status)
    if code is None:
        return False
    batch.results[position] = refused_operation(
        code,
        user_id=wallet.user_id,
        available_tokens=wallet.balance - wallet.held,
        required_tokens=amount,
    )
    return True


# The debit and credit rules are written twice: here in memory for a locked batch,
# and in handlers.py (credit, debit) as SQL for one operation. Change one, change the
# other: tests/ledger/test_group_commit.py
# (test_a_batch_equals_the_same_operations_one_at_a_time) fails when they differ.
def _credit(batch: KernelBatch, position: int, op: Credit, wallet: KernelWallet) -> None:
    if wallet.balance < 0:
        # Its grant pays the overdraft first (a settle movement): the per-operation path.
        defer(batch, position, wallet)
        return
    if wallet.status == "closed":
        _refuse_for_status(batch, position, wallet, op.amount_tokens)
        return
    wallet.balance += op.amount_tokens
    covered = wallet.balance >= wallet.held
    if wallet.status == "suspended" and wallet.reason == "overdraft" and covered:
        wallet.status, wallet.reason = "active", None
    transaction_id = record(
        batch,
        position,
        op,
        wallet,
        amount_tokens=op.amount_tokens,
        kind="credit",
        operation_type=op.operation_type,
        key_operation="credit",
        system_account=credit_source_account(op.operation_type),
    )
    batch.new_grants.append(
        grant_effects.grant_row(
            op,
            wallet_id=wallet.id,
            transaction_id=transaction_id,
            remaining=op.amount_tokens,
            now=batch.now,
        )
    )
    # A later debit of this batch could need the grant's id: it goes per operation.
    wallet.credited = True
    wallet.next_event = grant_rules.earliest(wallet.next_event, op.expires_at)


def _debit(batch: KernelBatch, position: int, op: Debit, wallet: KernelWallet) -> None:
    # A held amount may hide expired holds, and a due grant must expire first: the
    # per-operation path does both. A grant made earlier in this batch has no id yet.
    if wallet.held > 0 or wallet.due(batch.now) or wallet.credited:
        defer(batch, position, wallet)
        return
    if op.allow_overdraft:
        if wallet.status == "closed":
            _refuse_for_status(batch, position, wallet, op.amount_tokens)
            return
    elif _refuse_for_status(batch, position, wallet, op.amount_tokens):
        return
    elif wallet.balance - wallet.held < op.amount_tokens:
        # A scheduled credit may have come due: the per-operation path applies it
        # before it refuses (decision 13).
        defer(batch, position, wallet)
        return
    backed_before = grant_effects.backed(wallet.balance)
    wallet.balance -= op.amount_tokens
    wallet.spent += op.amount_tokens
    if wallet.status == "active" and wallet.balance < wallet.held:
        wallet.status, wallet.reason = "suspended", "overdraft"
    transaction_id = record(
        batch,
        position,
        op,
        wallet,
        amount_tokens=-op.amount_tokens,
        kind="debit",
        operation_type=op.operation_type,
        key_operation="debit",
        system_account=TOKENS_CONSUMED,
        pricing=op.pricing,
    )
    consumed = backed_before - grant_effects.backed(wallet.balance)
    consume(batch, wallet, consumed, transaction_id)


async def _write(
    conn: AsyncConnection, batch: KernelBatch, wallets: dict[str, KernelWallet]
) -> None:
    changes = [wallet.change(batch.now) for wallet in wallets.values() if wallet.changed]
    if not changes:
        return
    deltas = [{"grant_id": grant_id, "delta": d} for grant_id, d in batch.grant_deltas.items()]
    write_batch = batch_sqlite.write_batch if is_sqlite(conn) else batch_postgres.write_batch
    entry_ids = await write_batch(
        conn,
        changes=changes,
        legs=batch.legs,
        grants=batch.new_grants,
        grant_deltas=deltas,
        movements=batch.movements,
        headers=batch.headers,
        key_rows=batch.key_rows,
        placed_holds=batch.placed_holds,
        captured_holds=batch.captured_holds,
        now=batch.now,
    )
    for position, transaction_id in batch.pending_entry.items():
        result = batch.results[position]
        if isinstance(result, OperationResult | HoldResult) and transaction_id in entry_ids:
            batch.results[position] = replace(result, ledger_entry_id=entry_ids[transaction_id])
