"""The batch kernel: a whole batch of debits and credits in five statements.

Group commit hands the writer many operations at once. Applying them one by one
costs five round trips each (savepoint, update, entries, header, release); this
kernel instead

1. reads and locks every wallet of the batch (one SELECT ... FOR UPDATE, in id
   order, so concurrent batches never deadlock);
2. looks up the batch's idempotency keys (one SELECT);
3. decides each operation in order, in memory, with exactly the rules of the
   per-operation handlers (several operations on one wallet are judged one after
   another against the running balance);
4. writes one relative UPDATE per wallet (one executemany), all entries (one
   INSERT) and all headers (one INSERT).

The database still judges the result: the CHECK constraints see the final rows
and the triggers see every transaction. Anything the kernel does not settle
plainly (a wallet with holds, which may have expired; a refund; a hold) is left
to the per-operation path, in the same database transaction, and every later
operation on that wallet goes there too, so each wallet's operations keep their
order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.engine import is_sqlite
from tokenbank.db.rows import AnyRow
from tokenbank.ledger import grant_effects
from tokenbank.ledger import grants as grant_rules
from tokenbank.ledger.accounts import TOKENS_CONSUMED, credit_source_account
from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.grants import LiveGrant
from tokenbank.ledger.handlers import new_transaction_id, transaction_header
from tokenbank.ledger.idempotency import key_row
from tokenbank.ledger.operations import Credit, Debit
from tokenbank.ledger.repository import batch_postgres
from tokenbank.ledger.repository import grants as grant_repo
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.results import LedgerResult, OperationResult, refused_operation

FastOperation = Credit | Debit
FAST_TYPES = (Credit, Debit)
STATUS_REFUSALS = {"suspended": ErrorCode.WALLET_SUSPENDED, "closed": ErrorCode.WALLET_CLOSED}


@dataclass
class _Wallet:
    """A wallet as the batch changes it, from the locked row."""

    id: int
    user_id: str
    balance: int
    held: int
    spent: int
    status: str
    reason: str | None
    start_balance: int
    start_spent: int
    next_event: datetime | None
    start_next_event: datetime | None
    grants: list[LiveGrant] = field(default_factory=list)
    deferred: bool = False
    credited: bool = False  # a credit of this batch made a grant not yet written

    @classmethod
    def of(cls, row: AnyRow) -> _Wallet:
        return cls(
            id=row.id,
            user_id=row.user_id,
            balance=row.balance_tokens,
            held=row.held_tokens,
            spent=row.spent_tokens,
            status=row.status,
            reason=row.suspended_reason,
            start_balance=row.balance_tokens,
            start_spent=row.spent_tokens,
            next_event=row.next_grant_event_at,
            start_next_event=row.next_grant_event_at,
        )

    @property
    def changed(self) -> bool:
        return (
            self.balance != self.start_balance
            or self.spent != self.start_spent
            or self.next_event != self.start_next_event
        )

    def due(self, now: datetime) -> bool:
        """A grant of this wallet has expired and not been expired yet."""
        return self.next_event is not None and self.next_event <= now

    def change(self, now: datetime) -> dict[str, Any]:
        return {
            "wallet_id": self.id,
            "balance_delta": self.balance - self.start_balance,
            "spent_delta": self.spent - self.start_spent,
            "new_status": self.status,
            "new_reason": self.reason,
            "next_event_at": self.next_event,
            "now": now,
        }


@dataclass
class _Batch:
    """What the kernel decided: results by position, rows to write, what it left."""

    now: datetime
    results: dict[int, LedgerResult]
    deferred: list[int]
    legs: list[dict[str, Any]]
    headers: list[dict[str, Any]]
    pending_entry: dict[int, str]  # position -> transaction id awaiting its entry id
    key_rows: list[dict[str, Any]]  # the idempotency keys of the operations applied
    seen_keys: dict[tuple[str, str], tuple[str, int]]  # key -> (request hash, position)
    new_grants: list[dict[str, Any]] = field(default_factory=list)  # credits' grant rows
    grant_deltas: dict[int, int] = field(default_factory=dict)  # grant id -> tokens
    movements: list[dict[str, Any]] = field(default_factory=list)  # consumptions


async def apply_fast(
    conn: AsyncConnection, operations: list[tuple[int, FastOperation]], now: datetime
) -> tuple[dict[int, LedgerResult], list[int]]:
    """Settle what it can; the results by position, and the positions it left."""
    locked = await repo.lock_wallets_with_grants(conn, sorted({op.user_id for _, op in operations}))
    wallets = _wallets_with_grants(locked)
    keys = sorted({_key(op) for _, op in operations if op.idempotency_key is not None})
    committed = await repo.registered_keys(conn, keys) if keys else {}
    batch = _Batch(
        now=now,
        results={},
        deferred=[],
        legs=[],
        headers=[],
        pending_entry={},
        key_rows=[],
        seen_keys={},
    )
    for position, op in operations:
        _decide(batch, position, op, wallets, committed)
    await _write(conn, batch, wallets)
    return batch.results, batch.deferred


def _wallets_with_grants(locked: list[tuple[AnyRow, list[repo.GrantTuple]]]) -> dict[str, _Wallet]:
    """The locked wallets by user id, each with its live grants."""
    wallets: dict[str, _Wallet] = {}
    for row, grants in locked:
        wallet = wallets[row.user_id] = _Wallet.of(row)
        wallet.grants = [LiveGrant(*grant) for grant in grants]
    return wallets


def _key(op: FastOperation) -> tuple[str, str]:
    return (op.idempotency_scope, op.idempotency_key or "")


def _decide(
    batch: _Batch,
    position: int,
    op: FastOperation,
    wallets: dict[str, _Wallet],
    committed: dict[tuple[str, str], AnyRow],
) -> None:
    wallet = wallets.get(op.user_id)
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
    decided = batch.results.get(position)
    if op.idempotency_key is not None and decided is not None and decided.success:
        batch.seen_keys[_key(op)] = (op.request_hash(), position)


def _answered_by_key(
    batch: _Batch, position: int, op: FastOperation, committed: dict[tuple[str, str], AnyRow]
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


def _replay_of(batch: _Batch, first: int) -> OperationResult:
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


def _refuse_for_status(batch: _Batch, position: int, wallet: _Wallet, amount: int) -> bool:
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
def _credit(batch: _Batch, position: int, op: Credit, wallet: _Wallet) -> None:
    if wallet.balance < 0:
        # Its grant pays the overdraft first (a settle movement): the per-operation path.
        _defer(batch, position, wallet)
        return
    if wallet.status == "closed":
        _refuse_for_status(batch, position, wallet, op.amount_tokens)
        return
    wallet.balance += op.amount_tokens
    covered = wallet.balance >= wallet.held
    if wallet.status == "suspended" and wallet.reason == "overdraft" and covered:
        wallet.status, wallet.reason = "active", None
    transaction_id = _record(
        batch,
        position,
        op,
        wallet,
        amount_tokens=op.amount_tokens,
        kind="credit",
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


def _defer(batch: _Batch, position: int, wallet: _Wallet) -> None:
    wallet.deferred = True
    batch.deferred.append(position)


def _debit(batch: _Batch, position: int, op: Debit, wallet: _Wallet) -> None:
    # A held amount may hide expired holds, and a due grant must expire first: the
    # per-operation path does both. A grant made earlier in this batch has no id yet.
    if wallet.held > 0 or wallet.due(batch.now) or wallet.credited:
        _defer(batch, position, wallet)
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
        _defer(batch, position, wallet)
        return
    backed_before = grant_effects.backed(wallet.balance)
    wallet.balance -= op.amount_tokens
    wallet.spent += op.amount_tokens
    if wallet.status == "active" and wallet.balance < wallet.held:
        wallet.status, wallet.reason = "suspended", "overdraft"
    transaction_id = _record(
        batch,
        position,
        op,
        wallet,
        amount_tokens=-op.amount_tokens,
        kind="debit",
        system_account=TOKENS_CONSUMED,
        pricing=op.pricing,
    )
    consumed = backed_before - grant_effects.backed(wallet.balance)
    _consume(batch, wallet, consumed, transaction_id)


def _consume(batch: _Batch, wallet: _Wallet, tokens: int, transaction_id: str) -> None:
    """grant_effects.consume, in memory: the grants' deltas and movements to write."""
    takes = grant_rules.plan_consumption(wallet.grants, tokens, batch.now, capture=False)
    for grant, take in takes:
        grant.remaining -= take
        batch.grant_deltas[grant.id] = batch.grant_deltas.get(grant.id, 0) - take
        batch.movements.append(
            grant_effects.movement(
                grant.id,
                -take,
                kind="consume",
                transaction_id=transaction_id,
                now=batch.now,
            )
        )
    wallet.next_event = grant_rules.next_event_at(wallet.grants)


def _record(
    batch: _Batch,
    position: int,
    op: FastOperation,
    wallet: _Wallet,
    *,
    amount_tokens: int,
    kind: str,
    system_account: str,
    **extra: Any,
) -> str:
    transaction_id = new_transaction_id()
    common = {"transaction_id": transaction_id, "created_at": batch.now}
    batch.legs.append(
        {
            **common,
            "wallet_id": wallet.id,
            "system_account": None,
            "amount_tokens": amount_tokens,
            "balance_before": wallet.balance - amount_tokens,
            "balance_after": wallet.balance,
        }
    )
    batch.legs.append(
        {
            **common,
            "wallet_id": None,
            "system_account": system_account,
            "amount_tokens": -amount_tokens,
            "balance_before": None,
            "balance_after": None,
        }
    )
    batch.headers.append(
        transaction_header(
            op,
            transaction_id=transaction_id,
            wallet_id=wallet.id,
            kind=kind,
            operation_type=op.operation_type,
            now=batch.now,
            **extra,
        )
    )
    batch.pending_entry[position] = transaction_id
    if op.idempotency_key is not None:
        batch.key_rows.append(key_row(op, kind, batch.now))
    batch.results[position] = OperationResult(
        success=True,
        new_balance=wallet.balance,
        transaction_id=transaction_id,
        available_tokens=wallet.balance - wallet.held,
        user_id=wallet.user_id,
    )
    return transaction_id


async def _write(conn: AsyncConnection, batch: _Batch, wallets: dict[str, _Wallet]) -> None:
    changes = [wallet.change(batch.now) for wallet in wallets.values() if wallet.changed]
    if not changes:
        return
    deltas = [{"grant_id": grant_id, "delta": d} for grant_id, d in batch.grant_deltas.items()]
    if not is_sqlite(conn):
        entry_ids = await batch_postgres.write_batch(
            conn,
            changes=changes,
            legs=batch.legs,
            grants=batch.new_grants,
            grant_deltas=deltas,
            movements=batch.movements,
            headers=batch.headers,
            key_rows=batch.key_rows,
            now=batch.now,
        )
    else:
        await repo.apply_wallet_deltas(conn, changes)
        await _write_grants(conn, batch, deltas)
        entry_ids = await repo.insert_batch(conn, batch.legs, _uniform(batch.headers))
        if batch.key_rows:
            await repo.record_keys(conn, batch.key_rows)
    for position, transaction_id in batch.pending_entry.items():
        result = batch.results[position]
        if isinstance(result, OperationResult) and transaction_id in entry_ids:
            batch.results[position] = _with_entry(result, entry_ids[transaction_id])


async def _write_grants(conn: AsyncConnection, batch: _Batch, deltas: list[dict[str, int]]) -> None:
    """Before the headers: their trigger checks the grants against the wallets."""
    if batch.new_grants:
        await grant_repo.insert_grants(conn, batch.new_grants)
    if deltas:
        await grant_repo.add_to_grants(conn, deltas)
    if batch.movements:
        await grant_repo.insert_movements(conn, batch.movements)


def _with_entry(result: OperationResult, entry_id: int) -> OperationResult:
    return replace(result, ledger_entry_id=entry_id)


def _uniform(headers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A multi-row INSERT needs the same columns in every row."""
    columns = {column for header in headers for column in header}
    return [{column: header.get(column) for column in columns} for header in headers]
