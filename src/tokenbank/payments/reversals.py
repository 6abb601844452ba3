"""Refunds and disputes: money going back takes back only what is left of that
purchase's grant (decisions 13 and 14).

A refund of r cents of a purchase of p cents answers for tokens * r / p of its
tokens (counted cumulatively, as Stripe reports ``amount_refunded``). Those are
clawed back from the purchase's own grant (``handlers.claw_back``: never another
grant, never what pending holds need); what is no longer there was spent, and is
recorded on the purchase as lost tokens, never taken from anything else. An open
dispute freezes its share the same way (clawed back into ``frozen_tokens``); won, the
frozen tokens come back as a paid credit with the grant's priority and expiry; lost,
they stay taken and the rest of the share is lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbank.db.rows import AnyRow
from tokenbank.ledger import handlers
from tokenbank.ledger.grants import DEFAULT_GRANT_PRIORITY, PAID
from tokenbank.ledger.operations import ClawBack, Credit
from tokenbank.ledger.repository import grants as grant_repo
from tokenbank.payments import repository as repo
from tokenbank.payments.errors import SaleMismatch
from tokenbank.payments.purchases import CREDIT_SCOPE, Outcome

WON = ("won", "warning_closed")


async def _paid_purchase(conn: AsyncConnection, intent: object) -> AnyRow | None:
    if not isinstance(intent, str):
        return None
    purchase = await repo.purchase_by_intent(conn, intent, for_update=True)
    if purchase is None or purchase.status != "paid" or purchase.credit_transaction_id is None:
        return None
    return purchase


def _share_tokens(purchase: AnyRow, cents: int) -> int:
    """The tokens ``cents`` of the purchase's price answer for (rounded down)."""
    cents = max(0, min(cents, purchase.amount_cents))
    return int(purchase.tokens * cents // purchase.amount_cents)


async def _claw(
    conn: AsyncConnection, purchase: AnyRow, tokens: int, key: str, now: datetime
) -> int:
    """Take back up to ``tokens`` of the purchase's grant; how many were taken."""
    if tokens <= 0:
        return 0
    operation = ClawBack(
        user_id=purchase.user_id,
        credit_transaction_id=purchase.credit_transaction_id,
        amount_tokens=tokens,
        description=f"Taken back: purchase {purchase.id}",
        metadata={"purchaseId": purchase.id},
        idempotency_key=key,
        idempotency_scope=CREDIT_SCOPE,
    )
    result = await handlers.claw_back(conn, operation, now)
    if not result.success:
        raise RuntimeError(f"clawback of purchase {purchase.id} refused: {result.error}")
    return result.clawed_tokens


def _check_currency(purchase: AnyRow, currency: object) -> None:
    if not isinstance(currency, str) or currency.lower() != purchase.currency:
        raise SaleMismatch(
            f"purchase {purchase.id} was paid in {purchase.currency}, not {currency}"
        )


async def charge_refunded(conn: AsyncConnection, charge: dict[str, Any], now: datetime) -> Outcome:
    purchase = await _paid_purchase(conn, charge.get("payment_intent"))
    if purchase is None:
        return Outcome.ignored("not a paid tokenbank purchase")
    _check_currency(purchase, charge.get("currency"))
    refunded = charge.get("amount_refunded")
    if not isinstance(refunded, int) or refunded <= purchase.refunded_cents:
        return Outcome.ignored("no refund beyond what is accounted for", purchase.id)
    refunded = min(refunded, purchase.amount_cents)
    accounted = purchase.clawed_back_tokens + purchase.lost_tokens + purchase.frozen_tokens
    due = _share_tokens(purchase, refunded) - accounted
    taken = await _claw(conn, purchase, due, f"refund-{purchase.id}-{refunded}", now)
    lost = max(due, 0) - taken
    await repo.update_purchase(
        conn,
        purchase.id,
        {
            "refunded_cents": refunded,
            "clawed_back_tokens": purchase.clawed_back_tokens + taken,
            "lost_tokens": purchase.lost_tokens + lost,
            "updated_at": now,
        },
    )
    return Outcome.applied(
        f"refund of {refunded} cents: {taken} tokens taken back, {lost} spent (lost)",
        purchase.id,
        user_id=purchase.user_id,
    )


async def dispute_created(conn: AsyncConnection, dispute: dict[str, Any], now: datetime) -> Outcome:
    purchase = await _paid_purchase(conn, dispute.get("payment_intent"))
    if purchase is None:
        return Outcome.ignored("not a paid tokenbank purchase")
    if purchase.dispute_status is not None:
        return Outcome.ignored(f"already disputed ({purchase.dispute_status})", purchase.id)
    _check_currency(purchase, dispute.get("currency"))
    amount = dispute.get("amount")
    cents = amount if isinstance(amount, int) else purchase.amount_cents
    accounted = purchase.clawed_back_tokens + purchase.lost_tokens
    share = min(_share_tokens(purchase, cents), purchase.tokens - accounted)
    frozen = await _claw(conn, purchase, share, f"dispute-{purchase.id}", now)
    await repo.update_purchase(
        conn, purchase.id, {"dispute_status": "open", "frozen_tokens": frozen, "updated_at": now}
    )
    return Outcome.applied(
        f"disputed: {frozen} tokens frozen until it closes", purchase.id, user_id=purchase.user_id
    )


async def dispute_closed(conn: AsyncConnection, dispute: dict[str, Any], now: datetime) -> Outcome:
    purchase = await _paid_purchase(conn, dispute.get("payment_intent"))
    if purchase is None or purchase.dispute_status != "open":
        return Outcome.ignored("no open dispute of a tokenbank purchase")
    status = dispute.get("status")
    if status in WON:
        return await _dispute_won(conn, purchase, now)
    if status != "lost":
        return Outcome.ignored(f"a dispute closed as {status!r}", purchase.id)
    amount = dispute.get("amount")
    cents = amount if isinstance(amount, int) else purchase.amount_cents
    accounted = purchase.clawed_back_tokens + purchase.lost_tokens + purchase.frozen_tokens
    share = min(
        _share_tokens(purchase, cents), purchase.tokens - accounted + purchase.frozen_tokens
    )
    lost = max(share - purchase.frozen_tokens, 0)
    await repo.update_purchase(
        conn,
        purchase.id,
        {
            "dispute_status": "lost",
            "clawed_back_tokens": purchase.clawed_back_tokens + purchase.frozen_tokens,
            "lost_tokens": purchase.lost_tokens + lost,
            "frozen_tokens": 0,
            "updated_at": now,
        },
    )
    return Outcome.applied(
        f"dispute lost: {purchase.frozen_tokens} tokens stay taken, {lost} spent (lost)",
        purchase.id,
        user_id=purchase.user_id,
    )


async def _dispute_won(conn: AsyncConnection, purchase: AnyRow, now: datetime) -> Outcome:
    frozen = purchase.frozen_tokens
    if frozen > 0:
        grant = await grant_repo.grant_of_credit(conn, purchase.credit_transaction_id)
        credit = Credit(
            user_id=purchase.user_id,
            amount_tokens=frozen,
            operation_type="purchase",
            category=PAID,
            priority=grant.priority if grant is not None else DEFAULT_GRANT_PRIORITY,
            expires_at=grant.expires_at if grant is not None else None,
            description=f"Dispute won: purchase {purchase.id}",
            metadata={"purchaseId": purchase.id},
            idempotency_key=f"dispute-won-{purchase.id}",
            idempotency_scope=CREDIT_SCOPE,
        )
        result = await handlers.credit(conn, credit, now)
        if not result.success:
            raise RuntimeError(f"giving back purchase {purchase.id}: {result.error}")
    await repo.update_purchase(
        conn, purchase.id, {"dispute_status": "won", "frozen_tokens": 0, "updated_at": now}
    )
    return Outcome.applied(
        f"dispute won: {frozen} tokens given back", purchase.id, user_id=purchase.user_id
    )
