"""What the official stripe SDK can do against localstripe, and where localstripe differs
from Stripe: each quirk a payment flow would trip over is pinned by a test here, so a
localstripe upgrade that changes one fails loudly instead of silently.

Cards: localstripe accepts raw card numbers (real Stripe test mode wants tokens or the
``pm_card_*`` ids) and three ``pm_card_*`` ids.  Its card outcomes:

- 4242424242424242 (``pm_card_visa``): succeeds everywhere;
- 4000000000000341 (``pm_card_chargeCustomerFail``): attaches and saves fine, every
  charge is declined (``card_declined``): the off-session failure case;
- 4000000000000002 (``pm_card_visa_chargeDeclined``): declined when attached or
  saved by a SetupIntent, but a charge on it *succeeds* (Stripe declines it);
- 4000002500003155: the PaymentIntent stops in ``requires_action`` (3-D Secure).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import stripe

from tests.payments.support import WEBHOOK_SECRET
from tokenbank.testing.localstripe import LocalStripe, ReceivedWebhook, WebhookReceiver

VISA = "4242424242424242"
DECLINES_CHARGES = "4000000000000341"
DECLINES_ATTACHING = "4000000000000002"
REQUIRES_3DS = "4000002500003155"


# ---------------------------------------------------------------------- helpers


def card(client: stripe.StripeClient, number: str) -> stripe.PaymentMethod:
    return client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )


def customer(client: stripe.StripeClient, user_id: str) -> stripe.Customer:
    return client.v1.customers.create(
        {"email": f"{user_id}@example.test", "metadata": {"user_id": user_id}}
    )


def plain(value: object) -> object:
    """A StripeObject as a dict (it is not one, and is not equal to one)."""
    return value.to_dict() if isinstance(value, stripe.StripeObject) else value


def charge_of(intent: stripe.PaymentIntent) -> stripe.Charge:
    """localstripe puts the whole Charge in ``latest_charge``; Stripe puts its id there
    (an object only when expanded)."""
    latest = intent.latest_charge
    assert isinstance(latest, stripe.Charge), latest
    return latest


def save_card(client: stripe.StripeClient, customer_id: str, number: str) -> str:
    """Save a card the way a checkout page would: a SetupIntent, confirmed with it.

    localstripe does not attach the SetupIntent's payment method to its customer (Stripe
    does), so it is attached explicitly, which Stripe accepts too (same customer)."""
    setup = client.v1.setup_intents.create({"customer": customer_id, "usage": "off_session"})
    setup = client.v1.setup_intents.confirm(setup.id, {"payment_method": card(client, number).id})
    assert setup.status == "succeeded"
    assert isinstance(setup.payment_method, str)
    client.v1.payment_methods.attach(setup.payment_method, {"customer": customer_id})
    return setup.payment_method


def all_event_ids(client: stripe.StripeClient) -> set[str]:
    return {event.id for event in client.v1.events.list({"limit": 100}).auto_paging_iter()}


def event_types_caused_by(client: stripe.StripeClient, action: Callable[[], object]) -> list[str]:
    """The types of the events `action` made, in order: localstripe stores each event when
    the call that causes it runs, so the events API shows them at once (the webhook for
    each is posted a second later)."""
    before = all_event_ids(client)
    action()
    events = client.v1.events.list({"limit": 100}).auto_paging_iter()
    return [event.type for event in events if event.id not in before]


def listening_addresses(port: int) -> set[str]:
    """The local addresses (as /proc/net/tcp* spells them) with a socket listening on port."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def wait_until_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # exited, not yet reaped
            return True
        time.sleep(0.05)
    return False


# -------------------------------------------------------------------- the harness


def test_it_listens_on_127_0_0_1_only(localstripe: LocalStripe) -> None:
    assert localstripe.api_base == f"http://127.0.0.1:{localstripe.port}"
    assert listening_addresses(localstripe.port) == {"0100007F"}


def test_stop_ends_the_process_it_started() -> None:
    with LocalStripe() as server:
        pid = server.pid
        assert pid is not None and server.running
        assert server.client().v1.customers.create().id.startswith("cus_")
    assert not server.running
    assert wait_until_gone(pid, timeout=5)


def test_the_server_exits_when_its_starter_is_killed_outright() -> None:
    """SIGKILL runs no atexit hook: the pipe only the starter held is what ends the child."""
    program = (
        "import sys, time\n"
        "from tokenbank.testing.localstripe import LocalStripe\n"
        "server = LocalStripe().start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert starter.stdout is not None
        child_pid = int(starter.stdout.readline())
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(timeout=10)
        assert wait_until_gone(child_pid, timeout=10)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=10)
        if starter.stdout is not None:
            starter.stdout.close()


def test_webhooks_may_only_go_to_loopback(localstripe: LocalStripe) -> None:
    with pytest.raises(ValueError, match="loopback"):
        localstripe.configure_webhook("https://example.com/hook", WEBHOOK_SECRET)


# ---------------------------------------------------------------------- payments


def test_a_customer_is_created(stripe_client: stripe.StripeClient) -> None:
    created = customer(stripe_client, "alice")
    assert created.id.startswith("cus_")
    fetched = stripe_client.v1.customers.retrieve(created.id)
    assert fetched.email == "alice@example.test"
    assert plain(fetched.metadata) == {"user_id": "alice"}


def test_a_payment_intent_confirmed_with_a_test_card_succeeds(
    stripe_client: stripe.StripeClient,
) -> None:
    buyer = customer(stripe_client, "bob")
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 1999,
            "currency": "usd",
            "customer": buyer.id,
            "payment_method": "pm_card_visa",
            "metadata": {"purchase_id": "purchase-1", "user_id": "bob"},
        }
    )
    assert intent.status == "requires_confirmation"
    intent = stripe_client.v1.payment_intents.confirm(intent.id)
    assert intent.status == "succeeded"
    assert (intent.amount, intent.currency, intent.customer) == (1999, "usd", buyer.id)
    assert plain(intent.metadata) == {"purchase_id": "purchase-1", "user_id": "bob"}
    charge = charge_of(intent)
    assert (charge.amount, charge.paid, charge.captured) == (1999, True, True)
    assert charge.payment_intent == intent.id
    # The deprecated `charges` list is there too; `amount_received` is not.
    assert [c.id for c in intent.charges.data] == [charge.id]  # type: ignore[attr-defined]
    assert "amount_received" not in intent


def test_confirm_at_create_and_a_raw_card_number_work_too(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 500,
            "currency": "eur",
            "payment_method": card(stripe_client, VISA).id,
            "confirm": True,
        }
    )
    assert intent.status == "succeeded"


@pytest.mark.parametrize("payment_method", ["pm_card_chargeCustomerFail", "raw 0341"])
def test_a_card_that_declines_charges_fails_with_card_error(
    stripe_client: stripe.StripeClient, payment_method: str
) -> None:
    if payment_method == "raw 0341":
        payment_method = card(stripe_client, DECLINES_CHARGES).id
    params: stripe.params.PaymentIntentCreateParams = {
        "amount": 1000,
        "currency": "usd",
        "payment_method": payment_method,
        "confirm": True,
    }
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(params)
    assert declined.value.http_status == 402
    assert declined.value.code == "card_declined"
    error = declined.value.error
    assert error is not None and error.charge is not None and error.charge.startswith("ch_")
    # Unlike Stripe: no decline_code, no payment_intent in the error, type is not card_error.
    assert (error.decline_code, error.payment_intent, error.type) == (
        None,
        None,
        "invalid_request_error",
    )
    failed = stripe_client.v1.charges.retrieve(error.charge)
    assert (failed.status, failed.failure_code) == ("failed", "card_declined")
    assert isinstance(failed.payment_intent, str)
    intent = stripe_client.v1.payment_intents.retrieve(failed.payment_intent)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == "card_declined"


def test_the_generic_decline_card_declines_when_saved_but_not_when_charged(
    stripe_client: stripe.StripeClient,
) -> None:
    """4000000000000002 is declined by attach and by a SetupIntent; a PaymentIntent
    charging it succeeds in localstripe (Stripe declines it): use 0341 for declines."""
    buyer = customer(stripe_client, "carol")
    with pytest.raises(stripe.CardError, match="declined"):
        stripe_client.v1.payment_methods.attach(
            card(stripe_client, DECLINES_ATTACHING).id, {"customer": buyer.id}
        )
    with pytest.raises(stripe.CardError, match="declined"):
        save_card(stripe_client, buyer.id, DECLINES_ATTACHING)
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 100,
            "currency": "usd",
            "payment_method": "pm_card_visa_chargeDeclined",
            "confirm": True,
        }
    )
    assert intent.status == "succeeded"


def test_a_card_saved_by_a_setup_intent_pays_off_session(
    stripe_client: stripe.StripeClient,
) -> None:
    buyer = customer(stripe_client, "dave")
    setup = stripe_client.v1.setup_intents.create({"customer": buyer.id, "usage": "off_session"})
    assert (setup.status, setup.usage) == ("requires_payment_method", "off_session")
    assert setup.client_secret is not None and setup.client_secret.startswith(setup.id)
    payment_method = save_card(stripe_client, buyer.id, VISA)
    saved = stripe_client.v1.payment_methods.list({"customer": buyer.id, "type": "card"})
    assert [pm.id for pm in saved.data] == [payment_method]
    assert saved.data[0].card is not None and saved.data[0].card.last4 == "4242"
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 2500,
            "currency": "usd",
            "customer": buyer.id,
            "payment_method": payment_method,
            "off_session": True,
            "confirm": True,
            "metadata": {"reason": "auto_recharge"},
        }
    )
    assert intent.status == "succeeded"
    assert charge_of(intent).payment_method == payment_method


def test_a_setup_intent_alone_does_not_attach_its_card(stripe_client: stripe.StripeClient) -> None:
    buyer = customer(stripe_client, "erin")
    setup = stripe_client.v1.setup_intents.create({"customer": buyer.id})
    setup = stripe_client.v1.setup_intents.confirm(setup.id, {"payment_method": "pm_card_visa"})
    assert setup.status == "succeeded" and isinstance(setup.payment_method, str)
    assert stripe_client.v1.payment_methods.retrieve(setup.payment_method).customer is None


def test_an_off_session_payment_with_a_saved_card_that_declines_raises_card_error(
    stripe_client: stripe.StripeClient,
) -> None:
    buyer = customer(stripe_client, "frank")
    payment_method = save_card(stripe_client, buyer.id, DECLINES_CHARGES)
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(
            {
                "amount": 2500,
                "currency": "usd",
                "customer": buyer.id,
                "payment_method": payment_method,
                "off_session": True,
                "confirm": True,
            }
        )
    assert declined.value.code == "card_declined"
    assert declined.value.user_message == "Your card was declined."
    assert declined.value.request_id is None  # no Request-Id header: log the PaymentIntent id


def test_a_card_that_needs_3d_secure_stops_in_requires_action(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 100,
            "currency": "usd",
            "payment_method": card(stripe_client, REQUIRES_3DS).id,
            "confirm": True,
        }
    )
    assert intent.status == "requires_action"
    assert intent.next_action is not None and intent.next_action.type == "use_stripe_sdk"
    assert intent.latest_charge is None


def test_a_full_refund(stripe_client: stripe.StripeClient) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    refund = stripe_client.v1.refunds.create({"payment_intent": intent.id})
    assert (refund.amount, refund.status, refund.currency) == (1000, "succeeded", "usd")
    assert refund.charge == charge_of(intent).id
    charge = stripe_client.v1.charges.retrieve(charge_of(intent).id)
    assert (charge.amount_refunded, charge.refunded) == (1000, True)


def test_partial_refunds_add_up(stripe_client: stripe.StripeClient) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    charge_id = charge_of(intent).id
    first = stripe_client.v1.refunds.create(
        {"charge": charge_id, "amount": 300, "metadata": {"refund_id": "r1"}}
    )
    assert first.amount == 300
    assert plain(first.metadata) == {"refund_id": "r1"}
    charge = stripe_client.v1.charges.retrieve(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (300, False)
    stripe_client.v1.refunds.create({"payment_intent": intent.id, "amount": 700})
    charge = stripe_client.v1.charges.retrieve(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (1000, True)
    listed = stripe_client.v1.refunds.list({"payment_intent": intent.id})
    assert sorted(refund.amount for refund in listed.data) == [300, 700]


def test_refunds_are_not_checked_against_what_is_left(stripe_client: stripe.StripeClient) -> None:
    """Stripe refuses a refund above what is left; localstripe takes it, and a refund
    without an amount refunds the whole charge again: tokenbank must check itself."""
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    stripe_client.v1.refunds.create({"payment_intent": intent.id, "amount": 600})
    again = stripe_client.v1.refunds.create({"payment_intent": intent.id})
    assert again.amount == 1000
    assert stripe_client.v1.charges.retrieve(charge_of(intent).id).amount_refunded == 1600


def test_a_manual_capture_of_less_than_authorised_refunds_the_rest(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 900,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    assert intent.status == "requires_capture"
    intent = stripe_client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 600})
    assert intent.status == "succeeded"
    assert (charge_of(intent).amount, charge_of(intent).amount_refunded) == (900, 300)


def test_a_subscription_on_a_plan_creates_an_invoice_that_gets_paid(
    stripe_client: stripe.StripeClient,
) -> None:
    product = stripe_client.v1.products.create({"name": "Token pack, monthly"})
    plan = stripe_client.v1.plans.create(
        {"amount": 1500, "currency": "usd", "interval": "month", "product": product.id}
    )
    buyer = customer(stripe_client, "grace")
    payment_method = save_card(stripe_client, buyer.id, VISA)
    stripe_client.v1.customers.update(
        buyer.id, {"invoice_settings": {"default_payment_method": payment_method}}
    )
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": buyer.id, "items": [{"plan": plan.id}], "metadata": {"user_id": "grace"}}
    )
    assert subscription.status == "active"
    assert isinstance(subscription.latest_invoice, str)
    invoice = stripe_client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (invoice.status, invoice.amount_due, invoice.amount_paid) == ("paid", 1500, 1500)
    assert invoice.subscription == subscription.id  # type: ignore[attr-defined]
    assert invoice.parent is not None and invoice.parent.subscription_details is not None
    assert invoice.parent.subscription_details.subscription == subscription.id
    assert [line.plan.id for line in invoice.lines.data] == [plan.id]  # type: ignore[attr-defined]
    assert isinstance(invoice.payment_intent, str)  # type: ignore[attr-defined]
    paid_by = stripe_client.v1.payment_intents.retrieve(invoice.payment_intent)  # type: ignore[attr-defined]
    assert (paid_by.status, paid_by.amount, paid_by.invoice) == ("succeeded", 1500, invoice.id)  # type: ignore[attr-defined]
    listed = stripe_client.v1.invoices.list({"subscription": subscription.id})
    assert [i.id for i in listed.data] == [invoice.id]


def test_a_subscription_needs_a_plan_and_a_default_payment_method(
    stripe_client: stripe.StripeClient,
) -> None:
    """Items name a `plan` (the Prices API does not exist); the customer must have a
    default payment method or default source."""
    plan = stripe_client.v1.plans.create(
        {"amount": 700, "currency": "usd", "interval": "month", "product": {"name": "Starter"}}
    )
    buyer = customer(stripe_client, "heidi")
    with pytest.raises(stripe.InvalidRequestError, match="no payment method"):
        stripe_client.v1.subscriptions.create({"customer": buyer.id, "items": [{"plan": plan.id}]})
    with pytest.raises(stripe.InvalidRequestError, match="Bad request"):
        stripe_client.v1.subscriptions.create({"customer": buyer.id, "items": [{"price": plan.id}]})


def test_payment_intents_are_listed_for_a_reconcile_job(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    localstripe.flush()
    created = [
        stripe_client.v1.payment_intents.create(
            {
                "amount": 100 + n,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        ).id
        for n in range(5)
    ]
    page = stripe_client.v1.payment_intents.list({"limit": 2})
    assert (len(page.data), page.has_more) == (2, True)
    everything = stripe_client.v1.payment_intents.list({"limit": 2}).auto_paging_iter()
    # Oldest first (Stripe lists newest first); starting_after pages through all of them.
    assert [intent.id for intent in everything] == created
    for unsupported in ({"customer": "cus_x"}, {"created": {"gte": 1}}):
        with pytest.raises(stripe.InvalidRequestError, match="Unexpected"):
            stripe_client.v1.payment_intents.list(unsupported)  # type: ignore[arg-type]


def test_flush_deletes_every_object(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    kept = customer(stripe_client, "ivan")
    localstripe.flush()
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.customers.retrieve(kept.id)
    assert missing.value.http_status == 404


def test_idempotency_keys_are_ignored(stripe_client: stripe.StripeClient) -> None:
    """Stripe answers a repeated Idempotency-Key with the first result; localstripe makes
    a second object. Idempotency must be tokenbank's own (decision 14)."""
    params: stripe.params.CustomerCreateParams = {"email": "twice@example.test"}
    first = stripe_client.v1.customers.create(params, {"idempotency_key": "same-key"})
    second = stripe_client.v1.customers.create(params, {"idempotency_key": "same-key"})
    assert first.id != second.id


def test_calls_localstripe_does_not_have(stripe_client: stripe.StripeClient) -> None:
    intent = stripe_client.v1.payment_intents.create({"amount": 100, "currency": "usd"})
    with pytest.raises(stripe.APIError) as no_route:
        stripe_client.v1.checkout.sessions.create(
            {"mode": "payment", "success_url": "http://127.0.0.1/done"}
        )
    assert no_route.value.http_status == 404
    with pytest.raises(stripe.APIError) as no_prices:
        stripe_client.v1.prices.create({"currency": "usd", "unit_amount": 100, "product": "p"})
    assert no_prices.value.http_status == 404
    with pytest.raises(stripe.APIError) as no_customer_pms:
        stripe_client.v1.customers.payment_methods.list("cus_x")
    assert no_customer_pms.value.http_status == 404
    with pytest.raises(stripe.APIError) as not_implemented:
        stripe_client.v1.payment_intents.confirm(intent.id, {"payment_method": "pm_card_visa"})
    assert not_implemented.value.http_status == 500
    with pytest.raises(stripe.InvalidRequestError, match="Unexpected description"):
        stripe_client.v1.payment_intents.create(
            {"amount": 100, "currency": "usd", "description": "tokens"}
        )
    with pytest.raises(stripe.InvalidRequestError, match="Unexpected automatic_payment_methods"):
        stripe_client.v1.payment_intents.create(
            {"amount": 100, "currency": "usd", "automatic_payment_methods": {"enabled": True}}
        )
    with pytest.raises(stripe.InvalidRequestError, match="Unexpected reason"):
        stripe_client.v1.refunds.create({"payment_intent": intent.id, "reason": "duplicate"})


# ------------------------------------------------------------------------ events


def test_the_event_types_each_action_makes(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client

    def pay(payment_method: str, *, manual: bool = False) -> stripe.PaymentIntent:
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": 1200,
            "currency": "usd",
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": "manual" if manual else "automatic",
        }
        return client.v1.payment_intents.create(params)

    def declined() -> None:
        with pytest.raises(stripe.CardError):
            pay("pm_card_chargeCustomerFail")

    buyer = customer(client, "judy")
    assert event_types_caused_by(client, lambda: customer(client, "judy2")) == ["customer.created"]
    assert event_types_caused_by(client, lambda: pay("pm_card_visa")) == [
        "payment_intent.succeeded"
    ]
    assert event_types_caused_by(client, declined) == ["payment_intent.payment_failed"]
    held = pay("pm_card_visa", manual=True)
    assert event_types_caused_by(client, lambda: client.v1.payment_intents.capture(held.id)) == [
        "payment_intent.succeeded"
    ]
    assert (
        event_types_caused_by(
            client, lambda: client.v1.refunds.create({"payment_intent": held.id, "amount": 1})
        )
        == []
    )  # no charge.refunded, no refund.created
    assert event_types_caused_by(client, lambda: save_card(client, buyer.id, VISA)) == []
    assert event_types_caused_by(
        client,
        lambda: client.v1.customers.update(
            buyer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}}
        ),
    ) == ["customer.updated"]
    plans: list[stripe.Plan] = []
    assert event_types_caused_by(
        client,
        lambda: plans.append(
            client.v1.plans.create(
                {"amount": 900, "currency": "usd", "interval": "month", "product": {"name": "P"}}
            )
        ),
    ) == ["product.created", "plan.created"]
    subscriptions: list[stripe.Subscription] = []
    assert event_types_caused_by(
        client,
        lambda: subscriptions.append(
            client.v1.subscriptions.create({"customer": buyer.id, "items": [{"plan": plans[0].id}]})
        ),
    ) == [
        "invoice.created",
        "payment_intent.succeeded",
        "invoice.payment_succeeded",
        "customer.subscription.created",
    ]
    assert event_types_caused_by(
        client, lambda: client.v1.subscriptions.cancel(subscriptions[0].id)
    ) == ["customer.subscription.deleted"]


def verified(hook: ReceivedWebhook, secret: str = WEBHOOK_SECRET) -> stripe.Event:
    event: stripe.Event = stripe.Webhook.construct_event(hook.body, hook.signature, secret)
    return event


def test_a_payment_intent_succeeded_webhook_verifies_with_the_sdk(
    stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    buyer = customer(stripe_client, "mallory")
    asked_at = time.time()
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 4200,
            "currency": "usd",
            "customer": buyer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"purchase_id": "purchase-42"},
        }
    )
    answered_at = time.time()
    hook = webhook_receiver.wait_for_event("payment_intent.succeeded", intent.id)
    # Posted asynchronously, about a second after the call that caused it.
    assert hook.received_at - answered_at >= 0.9
    assert hook.received_at - asked_at < 5
    assert hook.headers["content-type"] == "application/json; charset=utf-8"
    event = verified(hook)
    assert event.type == "payment_intent.succeeded"
    assert event.id.startswith("evt_")
    assert event.api_version == "2017-08-15"  # whatever version the client sends
    # The signature's t= is the event's creation time, not the time it was posted.
    assert hook.signature is not None and hook.signature.startswith(f"t={event.created},v1=")
    posted = event.data.object
    assert isinstance(posted, stripe.PaymentIntent)
    assert (posted.id, posted.amount, posted.currency, posted.customer) == (
        intent.id,
        4200,
        "usd",
        buyer.id,
    )
    assert plain(posted.metadata) == {"purchase_id": "purchase-42"}
    assert posted.status == "succeeded"
    assert charge_of(posted).id == charge_of(intent).id
    stored = stripe_client.v1.events.retrieve(event.id)
    assert stored.type == event.type


def test_a_webhook_signed_with_another_secret_or_altered_is_refused(
    stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    hook = webhook_receiver.wait_for_event("payment_intent.succeeded", intent.id)
    with pytest.raises(stripe.SignatureVerificationError, match="No signatures found matching"):
        verified(hook, secret="whsec_someone_else")
    altered = json.loads(hook.body)
    altered["data"]["object"]["amount"] = 1_000_000
    with pytest.raises(stripe.SignatureVerificationError, match="No signatures found matching"):
        stripe.Webhook.construct_event(json.dumps(altered), hook.signature, WEBHOOK_SECRET)


def test_the_signature_timestamp_tolerance(
    stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    """localstripe signs with the event's creation time, so a delivered webhook cannot be
    made old; re-signing its body with the SDK's own helper at a chosen time can."""
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    body = webhook_receiver.wait_for_event("payment_intent.succeeded", intent.id).body.decode()
    now = int(time.time())

    def signed_at(timestamp: int) -> str:
        header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET, timestamp)
        return str(header)

    assert stripe.Webhook.construct_event(body, signed_at(now - 290), WEBHOOK_SECRET).id
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance zone"):
        stripe.Webhook.construct_event(body, signed_at(now - 310), WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance zone"):
        stripe.Webhook.construct_event(body, signed_at(now - 20), WEBHOOK_SECRET, tolerance=10)
    # tolerance=0 switches the check off (the SDK tests `if tolerance and ...`).
    assert stripe.Webhook.construct_event(body, signed_at(0), WEBHOOK_SECRET, tolerance=0).id


def test_a_declined_payment_posts_payment_failed_with_the_error(
    stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(
            {
                "amount": 100,
                "currency": "usd",
                "payment_method": "pm_card_chargeCustomerFail",
                "confirm": True,
                "metadata": {"purchase_id": "purchase-declined"},
            }
        )
    assert declined.value.error is not None and declined.value.error.charge is not None
    charge = stripe_client.v1.charges.retrieve(declined.value.error.charge)
    assert isinstance(charge.payment_intent, str)
    hook = webhook_receiver.wait_for_event("payment_intent.payment_failed", charge.payment_intent)
    posted = verified(hook).data.object
    assert isinstance(posted, stripe.PaymentIntent)
    assert posted.status == "requires_payment_method"
    assert plain(posted.metadata) == {"purchase_id": "purchase-declined"}
    assert posted.last_payment_error is not None
    assert (posted.last_payment_error.code, posted.last_payment_error.charge) == (
        "card_declined",
        charge.id,
    )


def test_a_subscription_posts_a_paid_invoice(
    stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    plan = stripe_client.v1.plans.create(
        {"amount": 3000, "currency": "usd", "interval": "month", "product": {"name": "Pro"}}
    )
    buyer = customer(stripe_client, "niaj")
    stripe_client.v1.customers.update(
        buyer.id,
        {"invoice_settings": {"default_payment_method": save_card(stripe_client, buyer.id, VISA)}},
    )
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": buyer.id, "items": [{"plan": plan.id}]}
    )
    assert isinstance(subscription.latest_invoice, str)
    hook = webhook_receiver.wait_for_event("invoice.payment_succeeded", subscription.latest_invoice)
    invoice = hook.event["data"]["object"]
    assert verified(hook).type == "invoice.payment_succeeded"
    assert (invoice["status"], invoice["amount_paid"], invoice["subscription"]) == (
        "paid",
        3000,
        subscription.id,
    )
    assert [line["plan"]["id"] for line in invoice["lines"]["data"]] == [plan.id]
    assert invoice["billing_reason"] is None  # Stripe: "subscription_create"
    # invoice.created is a snapshot taken before payment: still a draft, nothing paid.
    created = webhook_receiver.wait_for_event("invoice.created", subscription.latest_invoice)
    assert (
        created.event["data"]["object"]["status"],
        created.event["data"]["object"]["amount_paid"],
    ) == (
        "draft",
        0,
    )


def test_a_webhook_can_subscribe_to_some_event_types(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> None:
    """Which webhooks get an event is decided when it is posted, a second after the call:
    a webhook configured in that second gets events made before it existed."""
    localstripe.configure_webhook(webhook_receiver.url, WEBHOOK_SECRET, events=["customer.created"])
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    buyer = customer(stripe_client, "olivia")
    webhook_receiver.wait_for_event("customer.created", buyer.id)
    time.sleep(0.3)  # the payment's event, had it been sent, was due before the customer's
    about_the_payment = [
        hook
        for hook in webhook_receiver.received
        if hook.event["data"]["object"]["id"] == intent.id
    ]
    assert about_the_payment == []
