"""The batch kernel's state: the locked wallets as the batch changes them, and what
it decided (results, and the rows to write); the steps every kind of operation
shares (record a transaction, consume grants, leave an operation to the
per-operation path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenbank.db.rows import AnyRow
from tokenbank.ledger import grant_effects
from tokenbank.ledger import grants as grant_rules
from tokenbank.ledger.grants import LiveGrant
from tokenbank.ledger.handlers import new_transaction_id, transaction_header
from tokenbank.ledger.idempotency import key_row
from tokenbank.ledger.operations import LedgerOperation
from tokenbank.ledger.repository import writes as repo
from tokenbank.ledger.results import LedgerResult, OperationResult


@dataclass
class KernelWallet:
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
    start_held: int
    next_event: datetime | None
    start_next_event: datetime | None
    grants: list[LiveGrant] = field(default_factory=list)
    deferred: bool = False
    credited: bool = False  # a credit of this batch made a grant not yet written

    @classmethod
    def of(cls, row: AnyRow) -> KernelWallet:
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
            start_held=row.held_tokens,
            next_event=row.next_grant_event_at,
            start_next_event=row.next_grant_event_at,
        )

    @property
    def changed(self) -> bool:
        return (
            self.balance != self.start_balance
            or self.spent != self.start_spent
            or self.held != self.start_held
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
            "held_delta": self.held - self.start_held,
            "new_status": self.status,
            "new_reason": self.reason,
            "next_event_at": self.next_event,
            "now": now,
        }


@dataclass
class KernelBatch:
    """What the kernel decided: results by position, rows to write, what it left."""

    now: datetime
    results: dict[int, LedgerResult] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)
    legs: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, Any]] = field(default_factory=list)
    # position -> transaction id awaiting its entry id
    pending_entry: dict[int, str] = field(default_factory=dict)
    # the idempotency keys of the operations applied
    key_rows: list[dict[str, Any]] = field(default_factory=list)
    # key -> (request hash, position)
    seen_keys: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    new_grants: list[dict[str, Any]] = field(default_factory=list)  # credits' grant rows
    grant_deltas: dict[int, int] = field(default_factory=dict)  # grant id -> tokens
    movements: list[dict[str, Any]] = field(default_factory=list)  # consumptions
    placed_holds: list[dict[str, Any]] = field(default_factory=list)  # rows of holds
    captured_holds: list[dict[str, Any]] = field(default_factory=list)  # id, tokens, when
    captured_hold_ids: set[str] = field(default_factory=set)  # so none is captured twice


def wallets_with_grants(
    locked: list[tuple[AnyRow, list[repo.GrantTuple]]],
) -> dict[str, KernelWallet]:
    """The locked wallets by user id, each with its live grants."""
    wallets: dict[str, KernelWallet] = {}
    for row, grants in locked:
        wallet = wallets[row.user_id] = KernelWallet.of(row)
        wallet.grants = [LiveGrant(*grant) for grant in grants]
    return wallets


def defer(batch: KernelBatch, position: int, wallet: KernelWallet) -> None:
    wallet.deferred = True
    batch.deferred.append(position)


def consume(
    batch: KernelBatch,
    wallet: KernelWallet,
    tokens: int,
    transaction_id: str,
    *,
    kind: str = "consume",
) -> None:
    """grant_effects.consume, in memory: the grants' deltas and movements to write.
    (The kernel settles no wallet with a grant due, so a capture's order is a debit's.)"""
    takes = grant_rules.plan_consumption(wallet.grants, tokens, batch.now, capture=False)
    for grant, take in takes:
        grant.remaining -= take
        batch.grant_deltas[grant.id] = batch.grant_deltas.get(grant.id, 0) - take
        batch.movements.append(
            grant_effects.movement(
                grant.id,
                -take,
                kind=kind,
                transaction_id=transaction_id,
                now=batch.now,
            )
        )
    wallet.next_event = grant_rules.next_event_at(wallet.grants)


def record(
    batch: KernelBatch,
    position: int,
    op: LedgerOperation,
    wallet: KernelWallet,
    *,
    amount_tokens: int,
    kind: str,
    operation_type: str,
    key_operation: str,
    system_account: str,
    **extra: Any,
) -> str:
    """A transaction of ``amount_tokens`` between the wallet (already changed) and
    ``system_account``: its entries, header and key; an OperationResult at
    ``position``. ``key_operation`` names the operation in the key registry."""
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
            operation_type=operation_type,
            now=batch.now,
            **extra,
        )
    )
    batch.pending_entry[position] = transaction_id
    if op.idempotency_key is not None:
        batch.key_rows.append(key_row(op, key_operation, batch.now))
    batch.results[position] = OperationResult(
        success=True,
        new_balance=wallet.balance,
        transaction_id=transaction_id,
        available_tokens=wallet.balance - wallet.held,
        user_id=wallet.user_id,
    )
    return transaction_id
