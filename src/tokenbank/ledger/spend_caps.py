"""An API key's daily spend cap, judged in the transaction of the debit it counts (issue 14).

The writer calls :func:`over_cap` inside an operation's savepoint, after the handler
wrote the debit: the day's counter grows by what the operation debited only if it
stays within the cap, and a refusal rolls back the savepoint, debit and all. So the
counter and the ledger never disagree, even if the process dies, and concurrent
requests in any number of processes never pass the cap together (the counter row is
locked until the transaction ends).

What counts: deducts and token-process ends (debits, overdraft allowed or not) and
captures, each for the tokens it debits. A hold debits nothing: it is refused if it
would not fit in what is left of the day's cap, and counts when it is captured.
Refunds do not give back to the counter (what was spent was spent that day).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.ledger.errors import ErrorCode
from tokenbank.ledger.operations import CaptureHold, Debit, Operation, PlaceHold, SpendCap
from tokenbank.ledger.repository import spend_caps as repo
from tokenbank.ledger.results import LedgerResult, refused_hold, refused_operation


def utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def cap_of(op: Operation) -> SpendCap | None:
    if isinstance(op, Debit | PlaceHold | CaptureHold):
        return op.spend_cap
    return None


async def lock_counters(
    conn: AsyncConnection, operations: Sequence[Operation], now: datetime
) -> None:
    """Before a batch locks any wallet: lock the day's counters its capped operations use."""
    caps = {cap.key_id: cap.cap_tokens for op in operations if (cap := cap_of(op)) is not None}
    if caps:
        await repo.lock_days(conn, day=utc_day(now), caps=caps)


async def over_cap(
    conn: AsyncConnection, op: Operation, result: LedgerResult, now: datetime
) -> LedgerResult | None:
    """The refusal of an applied operation that its key's cap does not allow, else None."""
    cap = cap_of(op)
    if cap is None or result.replayed or not isinstance(op, Debit | PlaceHold | CaptureHold):
        return None
    tokens = op.amount_tokens
    if tokens == 0:
        return None
    day = utc_day(now)
    if isinstance(op, PlaceHold):
        spent = await repo.spent_on(conn, key_id=cap.key_id, day=day)
        fits = spent + tokens <= cap.cap_tokens
    else:
        fits = tokens <= cap.cap_tokens and (
            await repo.add_spend(
                conn, key_id=cap.key_id, day=day, tokens=tokens, cap_tokens=cap.cap_tokens
            )
            is not None
        )
    return None if fits else _refusal(op, cap)


def _refusal(op: Debit | PlaceHold | CaptureHold, cap: SpendCap) -> LedgerResult:
    code = ErrorCode.DAILY_SPEND_CAP_EXCEEDED
    if isinstance(op, Debit):
        return refused_operation(code, user_id=op.user_id, required_tokens=op.amount_tokens)
    return refused_hold(
        code,
        user_id=getattr(op, "user_id", None),
        hold_id=getattr(op, "hold_id", None),
        required_tokens=op.amount_tokens,
    )
