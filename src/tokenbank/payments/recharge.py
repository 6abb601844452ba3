"""Auto-recharge: when a user's available tokens fall below their threshold, buy the
chosen pack (or amount) on the saved card, with nobody present (decision 14).

The crossing is the database's: a trigger on ``wallets`` queues a ``recharges`` row in
the very transaction of the debit that crossed (at most one in flight per wallet), so
no spend path can forget it and a rolled-back debit queues nothing. This module is
everything after that: the settings and the saved card, and the worker that charges
each queued recharge once:

1. claim queued recharges (``SKIP LOCKED`` on PostgreSQL: two workers never share one);
2. open the recharge's ``auto_recharge`` purchase and commit it (a retry reuses it, so
   the charge it sends is the same request under the same idempotency key);
3. charge off-session, outside any transaction;
4. paid: credit the purchase as a paid grant and finish the recharge, in one
   transaction; declined: fail the purchase, finish the recharge and turn
   auto-recharge off with the reason, in one transaction; Stripe unreachable: fail
   the purchase and queue the recharge again for the next pass.

It does not import the PaymentService (whose event handlers import this module's
handler for ``setup_intent.succeeded``): it takes anything shaped like one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbank.config import Settings
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.models import MAX_PURCHASE_TOKENS
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput, TokenBankError
from tokenbank.ledger.repository import purchases as wallet_marks
from tokenbank.ledger.service import TokenService
from tokenbank.payments import repository as repo
from tokenbank.payments.errors import CustomerWalletNotFound, PaymentProviderError
from tokenbank.payments.gateway import CardDeclined, StripeGateway
from tokenbank.payments.purchases import (
    USER_KEY,
    Order,
    Outcome,
    fail,
    fulfil,
    new_purchase_id,
    purchase_values,
    stripe_metadata,
)
from tokenbank.validation import validate_text, validate_user_id

logger = logging.getLogger("tokenbank.payments.recharge")

MAX_PAYMENT_METHOD_ID_LENGTH = 255
# A card saved before any terms were chosen sits on a disabled row with these terms:
# the row needs some, and enabling (``configure``) always replaces them.
PLACEHOLDER_THRESHOLD_TOKENS = 10_000
PLACEHOLDER_AMOUNT_CENTS = 500
NO_LONGER_NEEDED = "no longer needed"
# A claim older than this belongs to a worker that died mid-charge (a charge takes
# seconds): the next pass queues it again.
STALE_CLAIM = timedelta(minutes=15)


class Payments(Protocol):
    """What auto-recharge uses of the PaymentService."""

    @property
    def settings(self) -> Settings: ...

    @property
    def gateway(self) -> StripeGateway: ...

    async def ensure_customer(self, user_id: str) -> str: ...

    async def order(
        self, *, pack_id: str | None, amount_cents: int | None, plan: str | None = None
    ) -> Order: ...


@dataclass(frozen=True, slots=True)
class AutoRecharge:
    """A user's auto-recharge as the API shows it (all None but the user: never set)."""

    user_id: str
    enabled: bool
    threshold_tokens: int | None
    pack_id: str | None
    amount_cents: int | None
    payment_method_id: str | None
    disabled_reason: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class CardSetup:
    """A SetupIntent for the page to confirm a card with (Stripe.js)."""

    setup_intent_id: str
    client_secret: str
    publishable_key: str | None


@dataclass(frozen=True, slots=True)
class RechargeRun:
    """What one pass did with one recharge: ``succeeded``, ``failed`` or ``queued``
    (Stripe could not be reached: the next pass tries again)."""

    recharge_id: int
    user_id: str | None
    status: str
    detail: str
    purchase_id: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """One off-session charge to make: the recharge's purchase and where it goes."""

    recharge_id: int
    user_id: str
    purchase_id: str
    amount_cents: int
    currency: str
    payment_method_id: str


def view(user_id: str, row: AnyRow | None) -> AutoRecharge:
    if row is None:
        return AutoRecharge(user_id, False, None, None, None, None, None, None)
    return AutoRecharge(
        user_id=row.user_id,
        enabled=row.enabled,
        threshold_tokens=row.threshold_tokens,
        pack_id=row.pack_id,
        amount_cents=row.amount_cents,
        payment_method_id=row.payment_method_id,
        disabled_reason=row.disabled_reason,
        updated_at=row.updated_at,
    )


def validate_threshold(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("thresholdTokens", "a whole number of tokens")
    if not 1 <= value <= MAX_PURCHASE_TOKENS:
        raise InvalidInput("thresholdTokens", f"from 1 to {MAX_PURCHASE_TOKENS:,} tokens")
    return value


def validate_payment_method(value: object) -> str | None:
    validate_text(
        value,
        field_name="paymentMethodId",
        max_length=MAX_PAYMENT_METHOD_ID_LENGTH,
        required=False,
    )
    return value if isinstance(value, str) else None


# --- inside another transaction (the webhook's, the worker's) ---------------------------------


async def store_card(
    conn: AsyncConnection, user_id: str, payment_method_id: str, now: datetime
) -> bool:
    """Put the card on the user's settings (a disabled placeholder row when there are
    none yet); whether anything changed."""
    row = await repo.auto_recharge_row(conn, user_id, for_update=True)
    if row is not None and row.payment_method_id == payment_method_id:
        return False
    values: dict[str, Any] = {
        "user_id": user_id,
        "payment_method_id": payment_method_id,
        "updated_at": now,
    }
    if row is None:
        values |= {
            "enabled": False,
            "threshold_tokens": PLACEHOLDER_THRESHOLD_TOKENS,
            "amount_cents": PLACEHOLDER_AMOUNT_CENTS,
        }
    await repo.save_auto_recharge(conn, values)
    return True


async def turn_off(conn: AsyncConnection, user_id: str, reason: str, now: datetime) -> bool:
    """Disable auto-recharge with the reason (the settings trigger disarms the wallet in
    this transaction); whether it was on."""
    row = await repo.auto_recharge_row(conn, user_id, for_update=True)
    if row is None or not row.enabled:
        return False
    values = {
        "user_id": user_id,
        "enabled": False,
        "disabled_reason": reason[:500],
        "updated_at": now,
    }
    await repo.save_auto_recharge(conn, values)
    return True


async def payment_failed(
    conn: AsyncConnection, purchase: AnyRow, reason: str, now: datetime
) -> None:
    """``payment_intent.payment_failed``: a recharge's decline turns auto-recharge off.

    Only while the purchase is still pending: once failed, the worker has judged it
    (a decline already turned it off; Stripe being unreachable queued a retry, whose
    own answer decides), and a late delivery must not undo a user's re-enabling.
    """
    if purchase.kind == "auto_recharge" and purchase.status == "pending":
        await turn_off(conn, purchase.user_id, reason, now)


async def _user_of_setup(conn: AsyncConnection, setup: dict[str, Any]) -> str | None:
    """The user a SetupIntent is for: its customer's, else tokenbank's metadata; None
    when the two disagree (a SetupIntent tokenbank did not make)."""
    customer = setup.get("customer")
    by_customer = await repo.user_of_customer(conn, customer) if isinstance(customer, str) else None
    metadata = setup.get("metadata")
    by_metadata = metadata.get(USER_KEY) if isinstance(metadata, dict) else None
    if not isinstance(by_metadata, str):
        return by_customer
    if by_customer is not None and by_customer != by_metadata:
        return None
    return by_customer or by_metadata


def _payment_method_of(setup: dict[str, Any]) -> str | None:
    method = setup.get("payment_method")
    if isinstance(method, dict):  # expanded
        method = method.get("id")
    if isinstance(method, str) and 0 < len(method) <= MAX_PAYMENT_METHOD_ID_LENGTH:
        return method
    return None


async def setup_intent_succeeded(
    conn: AsyncConnection, setup: dict[str, Any], now: datetime
) -> Outcome:
    """Save the card a confirmed SetupIntent holds (Stripe attached it to the customer)."""
    user_id = await _user_of_setup(conn, setup)
    method = _payment_method_of(setup)
    if user_id is None or method is None:
        return Outcome.ignored("not a card saved for a tokenbank user")
    if await wallet_marks.wallet_of_user(conn, user_id) is None:
        return Outcome.ignored(f"no wallet for user {user_id!r}")
    if not await store_card(conn, user_id, method, now):
        return Outcome.ignored(f"{method} is the saved card already")
    return Outcome.applied(f"saved {method} for auto-recharge of {user_id}")


# --- the service --------------------------------------------------------------------------------


class RechargeService:
    def __init__(self, payments: Payments, tokens: TokenService) -> None:
        self._payments = payments
        self._tokens = tokens

    async def _engine(self) -> AsyncEngine:
        return await self._tokens.engine()

    def _now(self) -> datetime:
        return self._tokens.clock()

    # --- settings and the card ---------------------------------------------------------

    async def get(self, user_id: str) -> AutoRecharge:
        """The user's auto-recharge; CustomerWalletNotFound (404) without a wallet."""
        validate_user_id(user_id)
        async with read_transaction(await self._engine()) as conn:
            if await wallet_marks.wallet_of_user(conn, user_id) is None:
                raise CustomerWalletNotFound(f"no wallet for user {user_id!r}")
            return view(user_id, await repo.auto_recharge_row(conn, user_id))

    async def configure(
        self,
        user_id: str,
        *,
        enabled: bool,
        threshold_tokens: int,
        pack_id: str | None = None,
        amount_cents: int | None = None,
        payment_method_id: str | None = None,
    ) -> AutoRecharge:
        """Set the terms; everything is checked before anything is written. Enabling
        needs a card (given here, or saved earlier) and clears the reason it was turned
        off; a wallet already below the new threshold is recharged at once."""
        validate_user_id(user_id)
        if not isinstance(enabled, bool):
            raise InvalidInput("enabled", "true or false")
        threshold = validate_threshold(threshold_tokens)
        method = validate_payment_method(payment_method_id)
        order = await self._payments.order(pack_id=pack_id, amount_cents=amount_cents)
        current = await self.get(user_id)
        if method is not None and method != current.payment_method_id:
            await self._attach(user_id, method)
        method = method or current.payment_method_id
        if enabled and method is None:
            raise InvalidInput(
                "paymentMethodId",
                "enabling auto-recharge needs a saved card: give paymentMethodId, or save"
                " one through a SetupIntent first",
            )
        values = {
            "user_id": user_id,
            "enabled": enabled,
            "threshold_tokens": threshold,
            "pack_id": order.pack_id,
            "amount_cents": None if order.pack_id is not None else order.amount_cents,
            "payment_method_id": method,
            "disabled_reason": None if enabled else current.disabled_reason,
            "updated_at": self._now(),
        }
        async with write_transaction(await self._engine()) as conn:
            await repo.save_auto_recharge(conn, values)
            if enabled:
                await self._queue_if_below(conn, user_id, threshold)
            row = await repo.auto_recharge_row(conn, user_id)
        return view(user_id, row)

    async def _queue_if_below(self, conn: AsyncConnection, user_id: str, threshold: int) -> None:
        # The trigger queues on a crossing only; a wallet already below the threshold
        # when auto-recharge is switched on would otherwise wait for its next debit.
        wallet = await wallet_marks.wallet_of_user(conn, user_id)
        if wallet is not None and wallet.status == "active" and wallet.available_tokens < threshold:
            await repo.queue_recharge(conn, wallet.id, wallet.available_tokens, self._now())

    async def start_card_setup(self, user_id: str) -> CardSetup:
        """A SetupIntent on the user's Stripe customer, for the page to confirm a card."""
        await self.get(user_id)  # the wallet must exist (404)
        customer = await self._payments.ensure_customer(user_id)
        setup = await self._payments.gateway.create_setup_intent(customer, user_id)
        return CardSetup(
            str(setup["id"]),
            str(setup.get("client_secret") or ""),
            self._payments.gateway.publishable_key,
        )

    async def save_card(self, user_id: str, payment_method_id: str) -> AutoRecharge:
        """Attach a confirmed card to the user's customer and keep it for recharges (it
        does not switch auto-recharge on)."""
        method = validate_payment_method(payment_method_id)
        if method is None:
            raise InvalidInput("paymentMethodId", "is required")
        await self.get(user_id)
        await self._attach(user_id, method)
        async with write_transaction(await self._engine()) as conn:
            await store_card(conn, user_id, method, self._now())
            row = await repo.auto_recharge_row(conn, user_id)
        return view(user_id, row)

    async def _attach(self, user_id: str, payment_method_id: str) -> None:
        customer = await self._payments.ensure_customer(user_id)
        try:
            await self._payments.gateway.attach_payment_method(payment_method_id, customer)
        except CardDeclined as declined:
            raise InvalidInput("paymentMethodId", f"Stripe refused the card: {declined}") from None

    # --- the worker ----------------------------------------------------------------------

    async def run_recharges(self, limit: int) -> list[RechargeRun]:
        """One pass: claim up to ``limit`` queued recharges and charge each once."""
        # No Stripe key: refuse before claiming anything (PaymentsNotConfigured).
        self._payments.gateway.client()
        now = self._now()
        async with write_transaction(await self._engine()) as conn:
            await repo.requeue_stale_recharges(conn, now - STALE_CLAIM, now)
            claimed = await repo.claim_recharges(conn, limit, now)
        runs: list[RechargeRun] = []
        try:
            for recharge in claimed:
                runs.append(await self._process_safely(recharge))
        except asyncio.CancelledError:
            # The worker is stopping: what this pass claimed and did not finish goes
            # back to the queue, or it would stay claimed (and its wallet unrecharged).
            for recharge in claimed[len(runs) :]:
                await self._requeue(recharge, "the worker stopped")
            raise
        return runs

    async def _process_safely(self, recharge: AnyRow) -> RechargeRun:
        try:
            return await self._process(recharge)
        except Exception as error:  # one recharge's fault must not strand the others
            logger.exception("recharge %s failed unexpectedly; queued again", recharge.id)
            detail = f"unexpected error: {error}"
            await self._requeue(recharge, detail)
            return RechargeRun(recharge.id, None, "queued", detail)

    async def _requeue(self, recharge: AnyRow, detail: str) -> None:
        # Queued again with the purchase it may have opened, so that the retry sends
        # the same charge under the same key (a charge that went through is answered,
        # not repeated).
        async with write_transaction(await self._engine()) as conn:
            rows = await repo.recharge_rows(conn, recharge.wallet_id)
            current = next((row for row in rows if row.id == recharge.id), None)
            if current is not None and current.status == "processing":
                await _finish(conn, current, "queued", detail, self._now())

    async def _process(self, recharge: AnyRow) -> RechargeRun:
        prepared = await self._prepare(recharge)
        if isinstance(prepared, RechargeRun):
            return prepared
        try:
            intent = await self._charge(prepared)
        except CardDeclined as declined:
            return await self._declined(prepared, declined)
        except PaymentProviderError as error:
            return await self._retry_later(prepared, str(error))
        return await self._paid(prepared, intent)

    async def _prepare(self, recharge: AnyRow) -> Charge | RechargeRun:
        """The charge to make, or why there is none (the recharge is then finished)."""
        now = self._now()
        async with write_transaction(await self._engine()) as conn:
            wallet = await wallet_marks.wallet_for_recharge(conn, recharge.wallet_id)
            settings = await repo.auto_recharge_row(conn, wallet.user_id) if wallet else None
            refusal = _not_needed(wallet, settings)
            if wallet is None or settings is None or refusal is not None:
                user_id = wallet.user_id if wallet is not None else None
                return await _finish(conn, recharge, "failed", refusal or "", now, user_id)
            earlier = (
                await repo.purchase_row(conn, recharge.purchase_id)
                if recharge.purchase_id is not None
                else None
            )
            if earlier is not None and earlier.status == "paid":
                return await _finish(conn, recharge, "succeeded", "paid", now, wallet.user_id)
        if earlier is not None:
            # A retry: the same purchase, so the same charge under the same key.
            return _charge_of(recharge.id, earlier, settings.payment_method_id)
        return await self._open_purchase(recharge, settings)

    async def _open_purchase(self, recharge: AnyRow, settings: AnyRow) -> Charge | RechargeRun:
        """The recharge's purchase, committed before the charge is sent."""
        try:
            order = await self._payments.order(
                pack_id=settings.pack_id, amount_cents=settings.amount_cents
            )
        except TokenBankError as error:  # the pack was withdrawn, the minimum raised
            return await self._cannot_sell(recharge, settings.user_id, str(error))
        order = replace(order, kind="auto_recharge")
        purchase_id = new_purchase_id()
        now = self._now()
        async with write_transaction(await self._engine()) as conn:
            await repo.insert_purchase(
                conn, purchase_values(purchase_id, settings.user_id, order, now)
            )
            await repo.finish_recharge(
                conn, recharge.id, status="processing", purchase_id=purchase_id, error=None, now=now
            )
            purchase = await repo.purchase_row(conn, purchase_id)
        assert purchase is not None
        return _charge_of(recharge.id, purchase, settings.payment_method_id)

    async def _cannot_sell(self, recharge: AnyRow, user_id: str, reason: str) -> RechargeRun:
        now = self._now()
        async with write_transaction(await self._engine()) as conn:
            await turn_off(conn, user_id, reason, now)
            return await _finish(conn, recharge, "failed", reason, now, user_id)

    async def _charge(self, charge: Charge) -> dict[str, Any]:
        customer = await self._payments.ensure_customer(charge.user_id)
        params = {
            "amount": charge.amount_cents,
            "currency": charge.currency,
            "customer": customer,
            "payment_method": charge.payment_method_id,
            "metadata": stripe_metadata(charge.purchase_id, charge.user_id),
        }
        # One key per crossing: Stripe answers a retry after a timeout with the first
        # charge instead of making a second one.
        key = f"tokenbank-recharge-{charge.recharge_id}"
        return await self._payments.gateway.charge_off_session(params, key)

    async def _paid(self, charge: Charge, intent: dict[str, Any]) -> RechargeRun:
        async def step(conn: AsyncConnection, purchase: AnyRow, now: datetime) -> RechargeRun:
            # The payment_intent.succeeded webhook may have credited it first: ignored.
            outcome = await fulfil(conn, purchase, str(intent["id"]), now)
            paid = outcome.outcome == "applied" or purchase.status == "paid"
            if not paid:  # a closed wallet refuses the credit: the money is to be refunded
                logger.error("recharge %s paid but not credited: %s", charge.recharge_id, outcome)
            status = "succeeded" if paid else "failed"
            return await _finish_charge(conn, charge, status, outcome.detail, now)

        run = await self._on_purchase(charge, step)
        if run.status == "succeeded":
            await self._tokens.invalidate_cache(charge.user_id)
        return run

    async def _declined(self, charge: Charge, declined: CardDeclined) -> RechargeRun:
        reason = declined.reason

        async def step(conn: AsyncConnection, purchase: AnyRow, now: datetime) -> RechargeRun:
            if declined.payment_intent_id and purchase.stripe_payment_intent_id is None:
                await repo.update_purchase(
                    conn, purchase.id, {"stripe_payment_intent_id": declined.payment_intent_id}
                )
            await fail(conn, purchase, reason, now)
            await turn_off(conn, charge.user_id, reason, now)
            return await _finish_charge(conn, charge, "failed", reason, now)

        return await self._on_purchase(charge, step)

    async def _retry_later(self, charge: Charge, reason: str) -> RechargeRun:
        async def step(conn: AsyncConnection, purchase: AnyRow, now: datetime) -> RechargeRun:
            await fail(conn, purchase, reason, now)
            return await _finish_charge(conn, charge, "queued", reason, now)

        return await self._on_purchase(charge, step)

    async def _on_purchase(
        self,
        charge: Charge,
        step: Callable[[AsyncConnection, AnyRow, datetime], Awaitable[RechargeRun]],
    ) -> RechargeRun:
        """Run ``step`` on the locked purchase, in one transaction with its effects."""
        async with write_transaction(await self._engine()) as conn:
            purchase = await repo.purchase_row(conn, charge.purchase_id, for_update=True)
            assert purchase is not None  # committed before the charge was sent
            return await step(conn, purchase, self._now())


async def _finish(
    conn: AsyncConnection,
    recharge: AnyRow,
    status: str,
    detail: str,
    now: datetime,
    user_id: str | None = None,
) -> RechargeRun:
    """Set a recharge's status (``queued`` again, or finished) and say so."""
    await repo.finish_recharge(
        conn,
        recharge.id,
        status=status,
        purchase_id=recharge.purchase_id,
        error=None if status == "succeeded" else detail[:500],
        now=now,
    )
    return RechargeRun(recharge.id, user_id, status, detail, recharge.purchase_id)


async def _finish_charge(
    conn: AsyncConnection, charge: Charge, status: str, detail: str, now: datetime
) -> RechargeRun:
    await repo.finish_recharge(
        conn,
        charge.recharge_id,
        status=status,
        purchase_id=charge.purchase_id,
        error=None if status == "succeeded" else detail[:500],
        now=now,
    )
    return RechargeRun(charge.recharge_id, charge.user_id, status, detail, charge.purchase_id)


def _not_needed(wallet: AnyRow | None, settings: AnyRow | None) -> str | None:
    """Why a queued recharge should not be charged now, if it should not."""
    if wallet is None:
        return "the wallet is gone"
    if wallet.status != "active":
        return f"the wallet is {wallet.status}"
    armed = wallet.recharge_below_tokens
    if armed is None or wallet.available_tokens >= armed:
        return NO_LONGER_NEEDED
    if settings is None or not settings.enabled or settings.payment_method_id is None:
        return NO_LONGER_NEEDED
    return None


def _charge_of(recharge_id: int, purchase: AnyRow, payment_method_id: str) -> Charge:
    return Charge(
        recharge_id,
        purchase.user_id,
        purchase.id,
        purchase.amount_cents,
        purchase.currency,
        payment_method_id,
    )


def summary(runs: list[RechargeRun]) -> str:
    """One line for a pass: how many of each outcome."""
    counts = {status: 0 for status in ("succeeded", "failed", "queued")}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return (
        f"{len(runs)} recharge(s): {counts['succeeded']} succeeded, {counts['failed']} failed,"
        f" {counts['queued']} queued again"
    )
