"""PaymentService: selling packs, amounts and plans through Stripe, and taking in
what Stripe says happened (decision 14)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.db.models import MAX_PRICE_CENTS
from tokenbank.db.rows import AnyRow
from tokenbank.errors import InvalidInput
from tokenbank.ledger.repository import purchases as wallet_marks
from tokenbank.ledger.service import TokenService
from tokenbank.metrics import stripe_events_received_total, stripe_events_total
from tokenbank.payments import repository as repo
from tokenbank.payments.errors import (
    CustomerWalletNotFound,
    PaymentProviderError,
    PurchaseNotFound,
    SaleMismatch,
)
from tokenbank.payments.events import apply_event, purchase_of_intent
from tokenbank.payments.gateway import StripeGateway
from tokenbank.payments.packs import PackService
from tokenbank.payments.purchases import (
    Order,
    Outcome,
    check_sale,
    fulfil,
    new_purchase_id,
    purchase_values,
    stripe_metadata,
)
from tokenbank.plans import repository as plans_repo
from tokenbank.pricing.service import PricingService
from tokenbank.validation import validate_user_id

MAX_URL_LENGTH = 2_048
RECONCILE_DEFAULT_DAYS = 3


@dataclass(frozen=True, slots=True)
class CheckoutStarted:
    purchase_id: str
    checkout_session_id: str
    url: str


@dataclass(frozen=True, slots=True)
class IntentCreated:
    purchase_id: str
    payment_intent_id: str
    client_secret: str
    publishable_key: str | None


@dataclass(frozen=True, slots=True)
class EventTaken:
    event_id: str
    event_type: str
    outcome: str
    detail: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Reconciled:
    payment_intent_id: str
    purchase_id: str | None
    outcome: str
    detail: str


def validate_return_url(value: object, field_name: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith(("https://", "http://"))
        or len(value) > MAX_URL_LENGTH
    ):
        raise InvalidInput(field_name, f"an http(s) URL of at most {MAX_URL_LENGTH} characters")
    return value


def validate_amount_cents(value: object, minimum_cents: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("amountCents", "a whole number of cents")
    if not minimum_cents <= value <= MAX_PRICE_CENTS:
        raise InvalidInput(
            "amountCents",
            f"at least {minimum_cents} cents (the minimum purchase) and at most {MAX_PRICE_CENTS}",
        )
    return value


class PaymentService:
    def __init__(
        self,
        tokens: TokenService,
        *,
        pricing: PricingService,
        gateway: StripeGateway | None = None,
    ) -> None:
        self._tokens = tokens
        self._pricing = pricing
        self.settings = tokens.settings
        self.gateway = gateway or StripeGateway(tokens.settings)

    async def aclose(self) -> None:
        await self.gateway.aclose()

    async def _engine(self) -> AsyncEngine:
        return await self._tokens.engine()

    def _now(self) -> datetime:
        return self._tokens.clock()

    async def packs(self) -> PackService:
        return PackService(await self._engine(), clock=self._tokens.clock)

    # --- what is bought ----------------------------------------------------------------

    async def order(
        self, *, pack_id: str | None, amount_cents: int | None, plan: str | None = None
    ) -> Order:
        """What a request buys: exactly one of a pack, an amount or a plan."""
        given = [
            name
            for name, v in (("packId", pack_id), ("amountCents", amount_cents), ("plan", plan))
            if v is not None
        ]
        if len(given) != 1:
            raise InvalidInput("packId", "give exactly one of packId, amountCents and plan")
        if pack_id is not None:
            return await self._pack_order(pack_id)
        if amount_cents is not None:
            return await self._amount_order(amount_cents)
        assert plan is not None
        return await self._plan_order(plan)

    async def _pack_order(self, pack_id: str) -> Order:
        pack = await (await self.packs()).get(pack_id)
        if not pack.terms.active:
            raise InvalidInput("packId", f"the pack {pack_id!r} is not on sale")
        terms = pack.terms
        return Order(
            "pack",
            terms.price_cents,
            terms.currency,
            terms.tokens,
            terms.name,
            pack_id=pack.id,
            stripe_price_id=terms.stripe_price_id,
        )

    async def _amount_order(self, amount_cents: int) -> Order:
        cents = validate_amount_cents(amount_cents, self.settings.minimum_purchase_cents)
        per_usd = (await self._pricing.settings()).tokens_per_usd
        tokens = cents * per_usd // 100
        currency = self.settings.purchase_currency
        return Order("amount", cents, currency, tokens, f"{tokens:,} tokens")

    async def _plan_order(self, plan: str) -> Order:
        async with read_transaction(await self._engine()) as conn:
            row = await plans_repo.plan_row(conn, plan)
        if row is None or row.stripe_price_id is None:
            raise InvalidInput("plan", f"no plan {plan!r} sold through Stripe")
        price = await self.gateway.price(row.stripe_price_id)
        return Order(
            "subscription",
            price.amount_cents,
            price.currency,
            0,
            f"Plan {plan}",
            plan=plan,
            stripe_price_id=row.stripe_price_id,
        )

    # --- customers and purchases ---------------------------------------------------------

    async def _require_wallet(self, user_id: str) -> None:
        validate_user_id(user_id)
        async with read_transaction(await self._engine()) as conn:
            if await wallet_marks.wallet_of_user(conn, user_id) is None:
                raise CustomerWalletNotFound(f"no wallet for user {user_id!r}")

    async def ensure_customer(self, user_id: str) -> str:
        """The user's Stripe customer, created the first time it is needed."""
        await self._require_wallet(user_id)
        engine = await self._engine()
        async with read_transaction(engine) as conn:
            known = await repo.customer_id(conn, user_id)
        if known is not None:
            return known
        created = await self.gateway.create_customer(user_id, None)
        async with write_transaction(engine) as conn:
            await repo.insert_customer(conn, user_id, created, self._now())
            # A racing request may have stored its own first: keep the stored one.
            stored = await repo.customer_id(conn, user_id)
        return stored or created

    async def _open_purchase(self, user_id: str, order: Order) -> str:
        validate_user_id(user_id)
        engine = await self._engine()
        purchase_id = new_purchase_id()
        async with write_transaction(engine) as conn:
            if await wallet_marks.wallet_of_user(conn, user_id) is None:
                raise CustomerWalletNotFound(f"no wallet for user {user_id!r}")
            await repo.insert_purchase(
                conn, purchase_values(purchase_id, user_id, order, self._now())
            )
        return purchase_id

    async def _note(self, purchase_id: str, values: dict[str, Any]) -> None:
        async with write_transaction(await self._engine()) as conn:
            await repo.update_purchase(conn, purchase_id, {**values, "updated_at": self._now()})

    async def _failed_to_start(self, purchase_id: str, error: PaymentProviderError) -> None:
        await self._note(purchase_id, {"status": "failed", "failure_reason": str(error)[:500]})

    async def start_checkout(
        self, user_id: str, order: Order, *, success_url: str, cancel_url: str
    ) -> CheckoutStarted:
        validate_return_url(success_url, "successUrl")
        validate_return_url(cancel_url, "cancelUrl")
        customer = await self.ensure_customer(user_id)
        purchase_id = await self._open_purchase(user_id, order)
        params = checkout_params(purchase_id, user_id, customer, order, success_url, cancel_url)
        try:
            session = await self.gateway.create_checkout_session(
                params, f"tokenbank-checkout-{purchase_id}"
            )
        except PaymentProviderError as error:
            await self._failed_to_start(purchase_id, error)
            raise
        await self._note(purchase_id, {"stripe_checkout_session_id": session["id"]})
        return CheckoutStarted(purchase_id, str(session["id"]), str(session.get("url") or ""))

    async def create_payment_intent(self, user_id: str, order: Order) -> IntentCreated:
        if order.kind == "subscription":
            raise InvalidInput("plan", "a plan is bought through a checkout")
        customer = await self.ensure_customer(user_id)
        purchase_id = await self._open_purchase(user_id, order)
        params = {
            "amount": order.amount_cents,
            "currency": order.currency,
            "customer": customer,
            "payment_method_types": ["card"],
            "metadata": stripe_metadata(purchase_id, user_id),
        }
        try:
            intent = await self.gateway.create_payment_intent(
                params, f"tokenbank-intent-{purchase_id}"
            )
        except PaymentProviderError as error:
            await self._failed_to_start(purchase_id, error)
            raise
        await self._note(purchase_id, {"stripe_payment_intent_id": intent["id"]})
        return IntentCreated(
            purchase_id,
            str(intent["id"]),
            str(intent.get("client_secret") or ""),
            self.gateway.publishable_key,
        )

    async def get_purchase(self, purchase_id: str) -> AnyRow:
        async with read_transaction(await self._engine()) as conn:
            row = await repo.purchase_row(conn, purchase_id)
        if row is None:
            raise PurchaseNotFound(f"no purchase {purchase_id!r}")
        return row

    async def list_purchases(
        self, *, user_id: str | None, limit: int = 50, offset: int = 0
    ) -> list[AnyRow]:
        async with read_transaction(await self._engine()) as conn:
            return await repo.purchase_rows(conn, user_id=user_id, limit=limit, offset=offset)

    # --- what Stripe says happened -------------------------------------------------------

    async def take_webhook(self, payload: bytes, signature: str | None) -> EventTaken:
        """Verify and apply one webhook delivery (the answer goes back after the commit)."""
        stripe_events_received_total.inc()
        try:
            event = self.gateway.verify_event(payload, signature)
        except Exception:
            stripe_events_total.labels("rejected").inc()
            raise
        return await self.take_event(event)

    async def take_event(self, event: dict[str, Any]) -> EventTaken:
        """Apply a verified event once: it is recorded by id in the same transaction as
        its effect; a repeated id changes nothing."""
        event_id, event_type = str(event["id"]), str(event["type"])
        now = self._now()
        async with write_transaction(await self._engine()) as conn:
            if not await repo.claim_event(conn, event_id, event_type, now):
                found = await repo.event_row(conn, event_id)
                detail = found.detail if found is not None else None
                stripe_events_total.labels("duplicate").inc()
                return EventTaken(event_id, event_type, "duplicate", detail or "", True)
            outcome = await apply_event(conn, event, now)
            await repo.settle_event(
                conn,
                event_id,
                outcome=outcome.outcome,
                detail=outcome.detail,
                purchase_id=outcome.purchase_id,
            )
        stripe_events_total.labels(outcome.outcome).inc()  # applied or ignored
        await self._changed(outcome)
        return EventTaken(event_id, event_type, outcome.outcome, outcome.detail, False)

    async def _changed(self, outcome: Outcome) -> None:
        if outcome.outcome == "applied" and outcome.user_id is not None:
            await self._tokens.invalidate_cache(outcome.user_id)

    async def reconcile(self, since: datetime | None = None) -> list[Reconciled]:
        """Credit succeeded PaymentIntents that no webhook credited (a lost delivery),
        exactly once: each goes through the same locked path as the webhook."""
        start = since or self._now() - timedelta(days=RECONCILE_DEFAULT_DAYS)
        intents = await self.gateway.succeeded_payment_intents(int(start.timestamp()))
        fixed = []
        for intent in intents:
            fixed.append(await self._reconcile_one(intent))
        return [item for item in fixed if item.outcome in ("applied", "refused")]

    async def _reconcile_one(self, intent: dict[str, Any]) -> Reconciled:
        intent_id = str(intent["id"])
        async with write_transaction(await self._engine()) as conn:
            purchase = await purchase_of_intent(conn, intent)
            if purchase is None or purchase.kind == "subscription":
                return Reconciled(intent_id, None, "ignored", "not a tokenbank purchase")
            try:
                check_sale(
                    purchase,
                    intent.get("amount_received") or intent.get("amount"),
                    intent.get("currency"),
                )
            except SaleMismatch as mismatch:
                return Reconciled(intent_id, purchase.id, "refused", str(mismatch))
            outcome = await fulfil(conn, purchase, intent_id, self._now())
        await self._changed(outcome)
        return Reconciled(intent_id, purchase.id, outcome.outcome, outcome.detail)


def checkout_params(
    purchase_id: str,
    user_id: str,
    customer: str,
    order: Order,
    success_url: str,
    cancel_url: str,
) -> dict[str, Any]:
    metadata = stripe_metadata(purchase_id, user_id)
    if order.stripe_price_id is not None:
        line: dict[str, Any] = {"price": order.stripe_price_id, "quantity": 1}
    else:
        line = {
            "price_data": {
                "currency": order.currency,
                "unit_amount": order.amount_cents,
                "product_data": {"name": order.name},
            },
            "quantity": 1,
        }
    params: dict[str, Any] = {
        "mode": "subscription" if order.kind == "subscription" else "payment",
        "customer": customer,
        "client_reference_id": purchase_id,
        "success_url": success_url,
        "cancel_url": cancel_url,
        "line_items": [line],
        "metadata": metadata,
    }
    if order.kind == "subscription":
        params["subscription_data"] = {"metadata": metadata}
    else:
        params["payment_intent_data"] = {"metadata": metadata}
    return params
