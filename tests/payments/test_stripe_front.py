"""The Stripe front (localstripe plus Checkout and Prices), driven by the official SDK
and by tokenbank's own gateway, as tokenbank's payment tests will drive it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
import stripe
from pydantic import SecretStr

from tests.payments.support import WEBHOOK_SECRET
from tokenbank.config import Settings
from tokenbank.payments.gateway import StripeGateway
from tokenbank.payments.purchases import Order
from tokenbank.payments.service import checkout_params
from tokenbank.testing.localstripe import LocalStripe, ReceivedWebhook, WebhookReceiver
from tokenbank.testing.stripe_front import (
    CheckoutPaymentFailed,
    SessionNotOpen,
    StripeFront,
    UnknownSession,
    decode_form,
)

SUCCESS = "http://127.0.0.1:9/done?session={CHECKOUT_SESSION_ID}"
CANCEL = "http://127.0.0.1:9/cancelled"
META = {"tokenbank_purchase_id": "p-1", "tokenbank_user_id": "u-1"}


# ---------------------------------------------------------------------- helpers


def plain(value: object) -> Any:
    return value.to_dict() if isinstance(value, stripe.StripeObject) else value


def browser() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def pack_session(
    client: stripe.StripeClient, customer: str | None = None, **extra: Any
) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "payment",
        "client_reference_id": "p-1",
        "success_url": SUCCESS,
        "cancel_url": CANCEL,
        "metadata": META,
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 999,
                    "product_data": {"name": "1M tokens"},
                },
                "quantity": 2,
            }
        ],
        "payment_intent_data": {"metadata": META},
        **extra,
    }
    if customer is not None:
        params["customer"] = customer
    return client.v1.checkout.sessions.create(params)  # type: ignore[arg-type]


def monthly_plan(client: stripe.StripeClient, amount: int = 1500) -> stripe.Plan:
    return client.v1.plans.create(
        {"amount": amount, "currency": "usd", "interval": "month", "product": {"name": "Pro"}}
    )


def verified(hook: ReceivedWebhook) -> stripe.Event:
    event: stripe.Event = stripe.Webhook.construct_event(hook.body, hook.signature, WEBHOOK_SECRET)
    return event


# -------------------------------------------------------------------- the server


def test_it_serves_loopback_only_and_stop_ends_its_thread(localstripe: LocalStripe) -> None:
    before = set(threading.enumerate())
    with StripeFront(localstripe) as front:
        assert front.api_base == f"http://127.0.0.1:{front.port}"
        with pytest.raises(ValueError, match="loopback"):
            front.configure_webhook("https://example.com/hook", WEBHOOK_SECRET)
        started = set(threading.enumerate()) - before
        assert [thread.name for thread in started] == ["stripe-front"]
        base = front.api_base
    assert not any(thread.is_alive() for thread in started)
    with browser() as page, pytest.raises(requests.ConnectionError):
        page.get(f"{base}/pay/cs_test_x", timeout=5)


# ------------------------------------------------------------------ form decoding


def test_bracketed_form_keys_decode_into_dicts_and_lists() -> None:
    body = (
        (
            "mode=payment&line_items[0][price_data][unit_amount]=5&line_items[0][quantity]=1"
            "&line_items[1][price]=plan_x&metadata[a]=b&metadata[empty]=&expand[]=x&expand[]=y"
        )
        .replace("[", "%5B")
        .replace("]", "%5D")
    )
    assert decode_form(body) == {
        "mode": "payment",
        "line_items": [{"price_data": {"unit_amount": "5"}, "quantity": "1"}, {"price": "plan_x"}],
        "metadata": {"a": "b", "empty": ""},
        "expand": ["x", "y"],
    }


@pytest.mark.parametrize("body", ["a=1&a[b]=2", "a[b]=2&a=1", "a=1&a=2", "a[=1", "a[][b]=1"])
def test_malformed_form_keys_are_refused(body: str) -> None:
    with pytest.raises(ValueError, match=r"Parameter|parameter name"):
        decode_form(body)


# -------------------------------------------------------------- checkout sessions


def test_a_session_with_price_data_is_created_and_retrieved(
    stripe_front: StripeFront, front_client: stripe.StripeClient
) -> None:
    buyer = front_client.v1.customers.create({"email": "a@example.test"})
    created = pack_session(front_client, buyer.id)
    assert created.id.startswith("cs_test_")
    assert (created.object, created.mode, created.status, created.payment_status) == (
        "checkout.session",
        "payment",
        "open",
        "unpaid",
    )
    assert (created.amount_total, created.currency, created.customer) == (1998, "usd", buyer.id)
    assert (created.client_reference_id, plain(created.metadata)) == ("p-1", META)
    assert (created.success_url, created.cancel_url) == (SUCCESS, CANCEL)
    assert created.url == f"{stripe_front.api_base}/pay/{created.id}"
    assert (created.payment_intent, created.subscription) == (None, None)
    fetched = front_client.v1.checkout.sessions.retrieve(created.id)
    assert plain(fetched) == plain(created)


def test_a_session_with_a_price_costs_the_plan(front_client: stripe.StripeClient) -> None:
    plan = monthly_plan(front_client, 700)
    price = front_client.v1.prices.retrieve(plan.id)
    assert (price.object, price.unit_amount, price.currency, price.product) == (
        "price",
        700,
        "usd",
        plan.product,
    )
    assert price.recurring is not None and price.recurring.interval == "month"
    created = front_client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "success_url": SUCCESS,
            "line_items": [{"price": plan.id, "quantity": 3}],
        }
    )
    assert (created.amount_total, created.currency, created.customer) == (2100, "usd", None)


def test_a_missing_price_is_a_stripe_shaped_404(front_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        front_client.v1.prices.retrieve("plan_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError, match="No such price") as in_a_session:
        front_client.v1.checkout.sessions.create(
            {"mode": "payment", "success_url": SUCCESS, "line_items": [{"price": "plan_nope"}]}
        )
    assert in_a_session.value.param == "line_items[0][price]"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"mode": "setup"}, "Invalid mode"),
        ({"line_items": []}, "line_items"),
        ({"success_url": ""}, "success_url"),
        ({"customer": "cus_nobody"}, "No such customer"),
        ({"allow_promotion_codes": True}, "unknown parameter: allow_promotion_codes"),
        ({"subscription_data": {"metadata": META}}, "subscription_data"),
        ({"payment_intent_data": {"description": "x"}}, "payment_intent_data\\[description\\]"),
    ],
)
def test_a_bad_session_create_is_a_stripe_shaped_400(
    front_client: stripe.StripeClient, change: dict[str, Any], says: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError, match=says) as refused:
        pack_session(front_client, **change)
    assert refused.value.http_status == 400
    assert refused.value.error is not None and refused.value.error.type == "invalid_request_error"


def test_unknown_sessions_and_routes_are_stripe_shaped(
    stripe_front: StripeFront, front_client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        front_client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError, match="Unrecognized request URL"):
        front_client.v1.checkout.sessions.list()
    answer = browser().post(f"{stripe_front.api_base}/v1/checkout/sessions", data={"mode": "x"})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_an_idempotency_key_answers_the_same_session(front_client: stripe.StripeClient) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "checkout-p-1-once"}
    params: Any = {"mode": "payment", "success_url": SUCCESS, "line_items": []}
    params["line_items"] = [
        {"price_data": {"currency": "eur", "unit_amount": 500, "product_data": {"name": "T"}}}
    ]
    first = front_client.v1.checkout.sessions.create(params, options)
    again = front_client.v1.checkout.sessions.create(params, options)
    assert again.id == first.id
    changed: Any = {**params, "client_reference_id": "x"}
    with pytest.raises(stripe.IdempotencyError):
        front_client.v1.checkout.sessions.create(changed, options)


# ------------------------------------------------------------------- forwarding


def test_other_calls_go_to_localstripe(front_client: stripe.StripeClient) -> None:
    buyer = front_client.v1.customers.create({"email": "f@example.test", "metadata": {"k": "v"}})
    assert buyer.id.startswith("cus_") and plain(buyer.metadata) == {"k": "v"}
    intent = front_client.v1.payment_intents.create(
        {
            "amount": 1234,
            "currency": "usd",
            "customer": buyer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"purchase": "p-9"},
        }
    )
    assert (intent.status, intent.amount, plain(intent.metadata)) == (
        "succeeded",
        1234,
        {"purchase": "p-9"},
    )
    listed = front_client.v1.payment_intents.list({"limit": 1})  # the query goes along
    assert len(listed.data) == 1
    with pytest.raises(stripe.InvalidRequestError) as missing:
        front_client.v1.customers.retrieve("cus_nobody")
    assert missing.value.http_status == 404  # localstripe's own error, relayed
    with pytest.raises(stripe.CardError):
        front_client.v1.payment_intents.create(
            {
                "amount": 100,
                "currency": "usd",
                "payment_method": "pm_card_chargeCustomerFail",
                "confirm": True,
            }
        )


# ------------------------------------------------------------------- completion


def test_completing_a_payment_session_posts_both_events(
    stripe_front: StripeFront,
    front_client: stripe.StripeClient,
    front_webhook_receiver: WebhookReceiver,
) -> None:
    buyer = front_client.v1.customers.create()
    session = pack_session(front_client, buyer.id)
    completed = stripe_front.complete(session.id)
    assert (completed["status"], completed["payment_status"], completed["url"]) == (
        "complete",
        "paid",
        None,
    )
    # Synchronous: the front's event is there when complete() returns.
    received = front_webhook_receiver.received
    assert [h.event["type"] for h in received if h.event["data"]["object"]["id"] == session.id] == [
        "checkout.session.completed"
    ]
    event = verified(
        front_webhook_receiver.wait_for_event("checkout.session.completed", session.id)
    )
    assert event.id.startswith("evt_")
    posted = event.data.object
    assert isinstance(posted, stripe.checkout.Session)
    assert (posted.payment_status, posted.amount_total, posted.client_reference_id) == (
        "paid",
        1998,
        "p-1",
    )
    intent_id = completed["payment_intent"]
    assert isinstance(intent_id, str) and posted.payment_intent == intent_id
    paid = verified(front_webhook_receiver.wait_for_event("payment_intent.succeeded", intent_id))
    intent = paid.data.object
    assert isinstance(intent, stripe.PaymentIntent)
    assert (intent.amount, intent.currency, intent.customer) == (1998, "usd", buyer.id)
    assert plain(intent.metadata) == META
    assert [
        (d.event_type, d.status) for d in stripe_front.deliveries if d.event_id == event.id
    ] == [("checkout.session.completed", 200)]
    assert plain(front_client.v1.checkout.sessions.retrieve(session.id)) == completed
    with pytest.raises(SessionNotOpen):
        stripe_front.complete(session.id)


def test_a_declined_card_leaves_the_session_open(
    stripe_front: StripeFront, front_client: stripe.StripeClient
) -> None:
    session = pack_session(front_client)
    with pytest.raises(CheckoutPaymentFailed, match="declined") as declined:
        stripe_front.complete(session.id, card="pm_card_chargeCustomerFail")
    assert declined.value.payment_intent is not None
    failed = front_client.v1.payment_intents.retrieve(declined.value.payment_intent)
    assert (failed.status, plain(failed.metadata)) == ("requires_payment_method", META)
    assert stripe_front.session(session.id)["status"] == "open"
    assert stripe_front.complete(session.id)["payment_status"] == "paid"
    with pytest.raises(UnknownSession):
        stripe_front.complete("cs_test_nope")


def test_a_subscription_session_completes_into_a_subscription(
    stripe_front: StripeFront,
    front_client: stripe.StripeClient,
    front_webhook_receiver: WebhookReceiver,
) -> None:
    plan = monthly_plan(front_client)
    buyer = front_client.v1.customers.create()
    session = front_client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": buyer.id,
            "client_reference_id": "p-2",
            "success_url": SUCCESS,
            "line_items": [{"price": plan.id, "quantity": 1}],
            "metadata": META,
            "subscription_data": {"metadata": META},
        }
    )
    assert (session.amount_total, session.mode) == (1500, "subscription")
    completed = stripe_front.complete(session.id)
    subscription_id = completed["subscription"]
    assert isinstance(subscription_id, str) and completed["payment_intent"] is None
    subscription = front_client.v1.subscriptions.retrieve(subscription_id)
    assert (subscription.status, subscription.customer) == ("active", buyer.id)
    assert plain(subscription.metadata) == META
    assert [item.plan.id for item in subscription["items"]["data"]] == [plan.id]
    hook = front_webhook_receiver.wait_for_event("checkout.session.completed", session.id)
    assert verified(hook).data.object["subscription"] == subscription_id
    invoice = completed["invoice"]
    assert isinstance(invoice, str) and invoice == subscription.latest_invoice
    front_webhook_receiver.wait_for_event("invoice.payment_succeeded", invoice)
    front_webhook_receiver.wait_for_event("customer.subscription.created", subscription_id)


def test_a_subscription_with_price_data_gets_a_plan_and_a_customer(
    stripe_front: StripeFront, front_client: stripe.StripeClient
) -> None:
    recurring = {"currency": "usd", "unit_amount": 900, "product_data": {"name": "Team"}}
    params: Any = {
        "mode": "subscription",
        "success_url": SUCCESS,
        "line_items": [{"price_data": recurring}],
    }
    with pytest.raises(stripe.InvalidRequestError, match="recurring"):
        front_client.v1.checkout.sessions.create(params)
    recurring["recurring"] = {"interval": "year"}
    session = front_client.v1.checkout.sessions.create(params)
    completed = stripe_front.complete(session.id)
    assert isinstance(completed["customer"], str)
    subscription = front_client.v1.subscriptions.retrieve(completed["subscription"])
    plan = subscription["items"]["data"][0]["plan"]
    assert (plan["amount"], plan["interval"], subscription.customer) == (
        900,
        "year",
        completed["customer"],
    )


def test_a_subscription_declined_at_its_first_invoice_is_not_left_behind(
    stripe_front: StripeFront, front_client: stripe.StripeClient
) -> None:
    buyer = front_client.v1.customers.create()
    session = front_client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": buyer.id,
            "success_url": SUCCESS,
            "line_items": [{"price": monthly_plan(front_client).id}],
        }
    )
    with pytest.raises(CheckoutPaymentFailed):
        stripe_front.complete(session.id, card="pm_card_chargeCustomerFail")
    assert stripe_front.session(session.id)["status"] == "open"
    listed = front_client.v1.subscriptions.list({"customer": buyer.id})
    assert [s.status for s in listed.data] in ([], ["canceled"])


def test_expire_posts_checkout_session_expired(
    stripe_front: StripeFront,
    front_client: stripe.StripeClient,
    front_webhook_receiver: WebhookReceiver,
) -> None:
    session = pack_session(front_client)
    assert stripe_front.expire(session.id)["status"] == "expired"
    hook = front_webhook_receiver.wait_for_event("checkout.session.expired", session.id)
    assert verified(hook).data.object["status"] == "expired"
    with pytest.raises(SessionNotOpen):
        stripe_front.complete(session.id)


# --------------------------------------------------------------------- pay page


def test_the_pay_page_pays_and_redirects_to_the_success_url(
    stripe_front: StripeFront,
    front_client: stripe.StripeClient,
    front_webhook_receiver: WebhookReceiver,
) -> None:
    session = pack_session(front_client)
    assert session.url is not None
    with browser() as page:
        shown = page.get(session.url)
        assert shown.status_code == 200
        assert shown.headers["content-type"].startswith("text/html")
        for marker in ('id="pay"', 'id="cancel"', 'id="card"', "19.98 USD", "1M tokens"):
            assert marker in shown.text
        assert "http" not in shown.text  # no external assets, no off-page links
        cancel = page.get(f"{stripe_front.api_base}/pay/{session.id}/cancel", allow_redirects=False)
        assert (cancel.status_code, cancel.headers["location"]) == (303, CANCEL)
        paid = page.post(session.url, data={"card": "pm_card_visa"}, allow_redirects=False)
    assert paid.status_code == 303
    assert paid.headers["location"] == SUCCESS.replace("{CHECKOUT_SESSION_ID}", session.id)
    assert stripe_front.session(session.id)["payment_status"] == "paid"
    front_webhook_receiver.wait_for_event("checkout.session.completed", session.id)


def test_the_pay_page_shows_a_decline_and_never_leaves_loopback(
    front_client: stripe.StripeClient,
) -> None:
    session = pack_session(front_client, success_url="https://shop.example.com/done")
    assert session.url is not None
    with browser() as page:
        declined = page.post(session.url, data={"card": "pm_card_chargeCustomerFail"})
        assert declined.status_code == 402
        assert 'id="error"' in declined.text and 'id="pay"' in declined.text
        paid = page.post(session.url, allow_redirects=False)
        assert paid.status_code == 200 and "not following" in paid.text
        again = page.post(session.url, allow_redirects=False)
        assert again.status_code == 409 and 'id="pay"' not in again.text


# ---------------------------------------------------------- tokenbank's gateway


async def test_tokenbank_gateway_checks_out_through_the_front(
    stripe_front: StripeFront, front_webhook_receiver: WebhookReceiver
) -> None:
    settings = Settings(
        stripe_secret_key=SecretStr("sk_test_gateway"),
        stripe_api_base=stripe_front.api_base,
        stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
    )
    gateway = StripeGateway(settings)
    try:
        await checkout_and_price(stripe_front, gateway, front_webhook_receiver)
    finally:
        await gateway.aclose()  # its open sockets would be a ResourceWarning, an error here


async def checkout_and_price(
    stripe_front: StripeFront, gateway: StripeGateway, receiver: WebhookReceiver
) -> None:
    customer = await gateway.create_customer("u-7", "u7@example.test")
    order = Order(kind="pack", amount_cents=2500, currency="usd", tokens=10, name="Pack")
    params = checkout_params("p-7", "u-7", customer, order, SUCCESS, CANCEL)
    session = await gateway.create_checkout_session(params, "tokenbank-checkout-p-7")
    assert (session["amount_total"], session["client_reference_id"]) == (2500, "p-7")
    await stripe_front.complete_async(session["id"])
    hook = receiver.wait_for_event("checkout.session.completed", session["id"])
    event = gateway.verify_event(hook.body, hook.signature)
    assert event["data"]["object"]["payment_status"] == "paid"
    plan = monthly_plan(stripe_front.client(), 1900)
    price = await gateway.price(plan.id)
    assert (price.amount_cents, price.currency) == (1900, "usd")
