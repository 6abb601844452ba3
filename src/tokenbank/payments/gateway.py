"""Stripe, through its official SDK: the calls tokenbank makes and the webhook check.

Every call that creates something carries an idempotency key derived from
tokenbank's own row (the purchase, the recharge, the user), so a retry after a
timeout never creates a second charge or customer. Answers come back as plain
dicts: tokenbank reads a few fields and trusts none of them blindly (the amount
and currency are checked against what was sold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe

from tokenbank.config import Settings
from tokenbank.payments.errors import BadWebhook, PaymentProviderError, PaymentsNotConfigured

# Stripe's own request retries: safe, since every creating call has an idempotency key.
NETWORK_RETRIES = 2


class CardDeclined(Exception):
    """An off-session charge the card (or its bank) refused, or one that needs the
    customer's action; ``reason`` says which."""

    def __init__(self, reason: str, payment_intent_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.payment_intent_id = payment_intent_id


class _HTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client, sending its form-encoded body as ``content``: httpx 0.28
    deprecates a text body passed as ``data`` (a DeprecationWarning on every call)."""

    def _get_request_args_kwargs(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        body = kwargs.pop("data", None)
        if body:
            kwargs["content"] = body
        return [args, kwargs]


def _params(params: dict[str, Any]) -> Any:
    # The SDK types its parameters as TypedDicts; tokenbank builds them as dicts.
    return params


def _plain(answer: Any) -> dict[str, Any]:
    plain: dict[str, Any] = answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)
    return plain


@dataclass(frozen=True, slots=True)
class Price:
    amount_cents: int
    currency: str


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: stripe.StripeClient | None = None
        self._http: _HTTPXClient | None = None

    @property
    def publishable_key(self) -> str | None:
        return self._settings.stripe_publishable_key

    def client(self) -> stripe.StripeClient:
        if self._client is None:
            secret = self._settings.stripe_secret_key
            if secret is None:
                raise PaymentsNotConfigured(
                    "payments are not configured: set TOKENBANK_STRIPE_SECRET_KEY"
                )
            base = self._settings.stripe_api_base
            self._http = _HTTPXClient()
            self._client = stripe.StripeClient(
                secret.get_secret_value(),
                base_addresses={"api": base} if base else None,
                http_client=self._http,
                max_network_retries=NETWORK_RETRIES,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the connections to Stripe (the service's shutdown)."""
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            self._http, self._client = None, None

    async def _call(self, what: str, call: Any) -> dict[str, Any]:
        try:
            return _plain(await call)
        except stripe.StripeError as error:
            raise PaymentProviderError(
                f"Stripe refused to {what}: {error.user_message or error}"
            ) from None

    async def create_customer(self, user_id: str, email: str | None) -> str:
        params: dict[str, Any] = {"metadata": {"tokenbank_user_id": user_id}}
        if email:
            params["email"] = email
        created = await self._call(
            "create a customer",
            self.client().v1.customers.create_async(
                _params(params), {"idempotency_key": f"tokenbank-customer-{user_id}"}
            ),
        )
        return str(created["id"])

    async def create_checkout_session(
        self, params: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        return await self._call(
            "start a checkout",
            self.client().v1.checkout.sessions.create_async(
                _params(params), {"idempotency_key": idempotency_key}
            ),
        )

    async def create_payment_intent(
        self, params: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        return await self._call(
            "create a payment",
            self.client().v1.payment_intents.create_async(
                _params(params), {"idempotency_key": idempotency_key}
            ),
        )

    async def charge_off_session(
        self, params: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """Charge a saved card with nobody present; CardDeclined when it cannot be."""
        full = {**params, "off_session": True, "confirm": True}
        try:
            intent = _plain(
                await self.client().v1.payment_intents.create_async(
                    _params(full), {"idempotency_key": idempotency_key}
                )
            )
        except stripe.CardError as error:
            failed = getattr(error.error, "payment_intent", None)
            intent_id = getattr(failed, "id", None)
            raise CardDeclined(error.user_message or str(error), intent_id) from None
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe refused the charge: {error}") from None
        if intent.get("status") != "succeeded":
            raise CardDeclined(f"the payment is {intent.get('status')}", str(intent["id"]))
        return intent

    async def price(self, price_id: str) -> Price:
        """What a Stripe price charges (a plan's subscription)."""
        found = await self._call("read a price", self.client().v1.prices.retrieve_async(price_id))
        amount, currency = found.get("unit_amount"), found.get("currency")
        if not isinstance(amount, int) or amount <= 0 or not isinstance(currency, str):
            raise PaymentProviderError(f"the Stripe price {price_id} has no fixed amount")
        return Price(amount, currency.lower())

    async def create_setup_intent(self, customer: str, user_id: str) -> dict[str, Any]:
        params = {
            "customer": customer,
            "usage": "off_session",
            "payment_method_types": ["card"],
            "metadata": {"tokenbank_user_id": user_id},
        }
        return await self._call(
            "save a card", self.client().v1.setup_intents.create_async(_params(params))
        )

    async def attach_payment_method(self, payment_method_id: str, customer: str) -> dict[str, Any]:
        """Keep a card on the customer for off-session charges (a SetupIntent attaches its
        card on Stripe, not on localstripe; attaching to the same customer again is
        accepted). CardDeclined when the card is refused, unknown or another customer's."""
        try:
            return _plain(
                await self.client().v1.payment_methods.attach_async(
                    payment_method_id, _params({"customer": customer})
                )
            )
        except (stripe.CardError, stripe.InvalidRequestError) as error:
            raise CardDeclined(error.user_message or str(error), None) from None
        except stripe.StripeError as error:
            raise PaymentProviderError(
                f"Stripe refused to save the card: {error.user_message or error}"
            ) from None

    async def succeeded_payment_intents(self, created_since: int) -> list[dict[str, Any]]:
        """Every PaymentIntent created since then (a Unix time) that succeeded."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100, "created": {"gte": created_since}}
        try:
            page = await self.client().v1.payment_intents.list_async(_params(params))
            async for intent in page.auto_paging_iter():
                plain = _plain(intent)
                if plain.get("status") == "succeeded":
                    found.append(plain)
        except stripe.StripeError as error:
            raise PaymentProviderError(f"Stripe refused the listing: {error}") from None
        return found

    def verify_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event a webhook delivers, once its signature and age are checked."""
        secret = self._settings.stripe_webhook_secret
        if secret is None:
            raise PaymentsNotConfigured(
                "the Stripe webhook is not configured: set TOKENBANK_STRIPE_WEBHOOK_SECRET"
            )
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text,
                signature or "",
                secret.get_secret_value(),
                self._settings.stripe_webhook_tolerance_seconds,
            )
            event = json.loads(text)
        except stripe.SignatureVerificationError as error:
            raise BadWebhook(f"signature refused: {error}") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadWebhook("the body is not a JSON event") from None
        return _checked_event(event)


def _checked_event(event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise BadWebhook("the body is not a JSON event")
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    valid = (
        isinstance(event_id, str)
        and 0 < len(event_id) <= 255
        and isinstance(event_type, str)
        and 0 < len(event_type) <= 100
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    )
    if not valid:
        raise BadWebhook("an event needs an id, a type and data.object")
    return event
