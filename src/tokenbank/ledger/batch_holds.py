"""The batch kernel's holds: placing one, and capturing one, in memory.

The rules are handlers.place_hold and handlers.capture_hold for the plain case;
anything else goes to the per-operation path (``defer``), which refuses, replays
or catches the wallet up exactly as it does for a single request:

- a hold: the wallet must be active, with no grant due and enough available;
- a capture: the hold pending and unexpired, not already captured in this batch,
  for more than nothing, on an active wallet with no grant due and no grant made
  earlier in this batch, and within what the hold and the available balance cover
  (a capture past them overdraws and suspends: per operation);
- either, with a key: a key not registered yet and not used earlier in the batch
  (the per-operation path replays it).

tests/ledger/test_group_commit.py holds the two paths to the same outcomes.
"""

from __future__ import annotations

from datetime import timedelta

from tokenbank.db.rows import AnyRow
from tokenbank.ledger.accounts import TOKENS_CONSUMED
from tokenbank.ledger.batch_state import KernelBatch, KernelWallet, consume, defer, record
from tokenbank.ledger.handlers import hold_row, new_hold_id, placed_hold
from tokenbank.ledger.idempotency import key_row
from tokenbank.ledger.operations import CaptureHold, PlaceHold
from tokenbank.ledger.results import HoldResult


def place_hold(batch: KernelBatch, position: int, op: PlaceHold, wallet: KernelWallet) -> None:
    available = wallet.balance - wallet.held
    if wallet.status != "active" or wallet.due(batch.now) or available < op.amount_tokens:
        defer(batch, position, wallet)
        return
    wallet.held += op.amount_tokens
    hold_id = new_hold_id()
    expires_at = batch.now + timedelta(seconds=op.ttl_seconds)
    batch.placed_holds.append(hold_row(op, hold_id, wallet.id, expires_at, batch.now))
    if op.idempotency_key is not None:
        batch.key_rows.append(key_row(op, "hold", batch.now))
    batch.results[position] = placed_hold(op, hold_id, expires_at, wallet.balance, wallet.held)


def capture(
    batch: KernelBatch, position: int, op: CaptureHold, wallet: KernelWallet, hold: AnyRow
) -> None:
    if not _capturable(batch, op, wallet, hold):
        defer(batch, position, wallet)
        return
    batch.captured_hold_ids.add(hold.id)
    wallet.held -= hold.amount_tokens
    wallet.balance -= op.amount_tokens
    wallet.spent += op.amount_tokens
    batch.captured_holds.append(
        {"hold_id": hold.id, "captured_tokens": op.amount_tokens, "resolved_at": batch.now}
    )
    transaction_id = record(
        batch,
        position,
        op,
        wallet,
        amount_tokens=-op.amount_tokens,
        kind="debit",
        operation_type=hold.operation_type,
        key_operation="capture",
        system_account=TOKENS_CONSUMED,
        hold_id=hold.id,
        pricing=op.pricing,
    )
    consume(batch, wallet, op.amount_tokens, transaction_id, kind="capture")
    batch.results[position] = HoldResult(
        success=True,
        hold_id=hold.id,
        status="captured",
        amount_tokens=hold.amount_tokens,
        captured_tokens=op.amount_tokens,
        expires_at=hold.expires_at,
        new_balance=wallet.balance,
        available_tokens=wallet.balance - wallet.held,
        transaction_id=transaction_id,
        user_id=wallet.user_id,
    )


def _capturable(batch: KernelBatch, op: CaptureHold, wallet: KernelWallet, hold: AnyRow) -> bool:
    """The plain case (see the module's docstring)."""
    settled_balance = wallet.balance - op.amount_tokens
    return (
        hold.status == "pending"
        and hold.expires_at > batch.now
        and hold.id not in batch.captured_hold_ids
        and op.amount_tokens > 0
        and wallet.status == "active"
        and not wallet.due(batch.now)
        and not wallet.credited
        and settled_balance >= wallet.held - hold.amount_tokens
    )
