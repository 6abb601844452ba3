"""A loopback "Stripe" for tests and local trials: localstripe, plus Checkout and Prices.

Why this exists: tokenbank sells through Stripe Checkout and reads plan prices with
the Prices API, and localstripe (the stateful fake the payment tests run, see
`tokenbank.testing.localstripe`) has neither.  `StripeFront` is a small HTTP server on
127.0.0.1 that the official SDK (and tokenbank's `stripe_api_base`) points at:

- ``POST /v1/checkout/sessions`` and ``GET /v1/checkout/sessions/{id}`` are served
  here, from sessions kept in memory;
- ``GET /v1/prices/{id}`` is answered from localstripe's plan of that id (localstripe
  subscriptions take plans, so a tokenbank plan's "price id" is a localstripe plan id);
- every other ``/v1/...`` request goes to localstripe unchanged, and its answer back;
- ``/pay/{id}`` is the hosted payment page a browser is sent to (plain HTML, no
  external assets, stable element ids ``#amount``, ``#card``, ``#pay``, ``#cancel``,
  ``#error``), whose Pay button completes the session.

Completing a session (`StripeFront.complete`, or the page's Pay button) pays on
localstripe, which then posts its own signed events (``payment_intent.succeeded``,
or the subscription's invoice and subscription events) about a second later, and the
front posts a signed ``checkout.session.completed`` itself, synchronously, before
`complete` returns.  See `StripeFront` for the differences from real Stripe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import httpx
import requests
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tokenbank.testing.localstripe import (
    DEFAULT_SECRET_KEY,
    DEFAULT_WEBHOOK_NAME,
    HOST,
    LocalStripe,
    _direct_opener,
    _is_loopback_url,
)

__all__ = [
    "CheckoutError",
    "CheckoutPaymentFailed",
    "Delivery",
    "FormError",
    "SessionNotOpen",
    "StripeFront",
    "UnknownSession",
    "decode_form",
]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_REQUEST_TIMEOUT_S = 10.0
_SESSION_LIFETIME_S = 24 * 3600  # Stripe's default expires_at
_FORWARDED_HEADERS = ("authorization", "idempotency-key", "stripe-version", "content-type")
# What a session create accepts; anything else is refused as Stripe refuses an unknown
# parameter, so a tokenbank change that sends something new fails loudly here.
_SESSION_PARAMS = frozenset(
    {
        "mode",
        "customer",
        "customer_email",
        "client_reference_id",
        "success_url",
        "cancel_url",
        "line_items",
        "metadata",
        "payment_intent_data",
        "subscription_data",
        "payment_method_types",
        "locale",
        "expand",
    }
)
_CARDS = (
    ("pm_card_visa", "Visa 4242 (succeeds)"),
    ("pm_card_chargeCustomerFail", "Visa 0341 (declined)"),
)


# ------------------------------------------------------------------ form decoding


class FormError(ValueError):
    """A form body that is not Stripe's bracketed encoding."""


_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)\Z")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def decode_form(body: str) -> dict[str, Any]:
    """``a[b][0][c]=1`` pairs, as the SDK sends them, into nested dicts and lists.

    Objects whose keys are all decimal indices become lists (the SDK sends a list as
    ``items[0]``, ``items[1]``...); an empty last segment (``expand[]=x``) appends."""
    root: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(body, keep_blank_values=True, strict_parsing=False):
        _insert(root, _key_path(key), value)
    listed = _listify(root)
    assert isinstance(listed, dict)
    return listed


def _key_path(key: str) -> list[str]:
    match = _KEY.match(key)
    if match is None:
        raise FormError(f"Invalid parameter name: {key!r}")
    path = [match.group(1), *_SEGMENT.findall(match.group(2))]
    if "" in path[:-1]:
        raise FormError(f"Invalid parameter name: {key!r} ([] only at the end)")
    return path


def _insert(root: dict[str, Any], path: list[str], value: str) -> None:
    node = root
    for segment in path[:-1]:
        child = node.setdefault(segment, {})
        if not isinstance(child, dict):
            raise FormError(f"Parameter {segment!r} is both a value and an object")
        node = child
    last = path[-1] if path[-1] else str(len(node))
    if last in node:
        raise FormError(f"Parameter {'.'.join(path)!r} is given twice or is an object")
    node[last] = value


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(key.isdecimal() for key in node):
        return [_listify(node[key]) for key in sorted(node, key=int)]
    return {key: _listify(value) for key, value in node.items()}


# ------------------------------------------------------------ Stripe-shaped errors


class _StripeError(Exception):
    """Raised by a handler, answered as ``{"error": {...}}`` with its status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": kind, "message": message}
        if param is not None:
            self.body["param"] = param
        if code is not None:
            self.body["code"] = code


def _missing(what: str, object_id: str, param: str) -> _StripeError:
    return _StripeError(
        404 if param == "id" else 400,
        f"No such {what}: '{object_id}'",
        param=param,
        code="resource_missing",
    )


async def _answer_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _StripeError)
    return JSONResponse({"error": exc.body}, status_code=exc.status)


# ---------------------------------------------------------------- checkout state


class CheckoutError(Exception):
    """A checkout session cannot be completed (or expired) as asked."""


class UnknownSession(CheckoutError, KeyError):
    """No checkout session has that id."""


class SessionNotOpen(CheckoutError):
    """The session is complete, expired, or being completed by another call."""


class CheckoutPaymentFailed(CheckoutError):
    """The card was declined, or the payment needs an action the fake cannot take
    (3-D Secure); the session stays open, as on Stripe's page."""

    def __init__(self, reason: str, payment_intent: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.payment_intent = payment_intent


@dataclass(frozen=True)
class _Line:
    """One line item, resolved: what it costs and, for a subscription, its plan."""

    unit_amount: int
    quantity: int
    currency: str
    name: str
    plan: str | None  # a localstripe plan (a `price` line)
    interval: str | None  # a `price_data` line's recurring interval


@dataclass
class _Checkout:
    public: dict[str, Any]  # the session as the API answers it
    lines: list[_Line]
    intent_metadata: dict[str, str]
    subscription_metadata: dict[str, str]
    busy: bool = False  # a completion is under way


@dataclass(frozen=True)
class Delivery:
    """One event the front posted to one webhook: its answer, or why there was none."""

    url: str
    event_id: str
    event_type: str
    status: int | None
    error: str | None


@dataclass(frozen=True)
class _Webhook:
    url: str
    secret: str
    events: frozenset[str] | None


@dataclass
class _Idempotent:
    body_digest: str
    session_id: str


@dataclass
class _State:
    """Everything the server thread and callers share, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: dict[str, _Checkout] = field(default_factory=dict)
    idempotency: dict[str, _Idempotent] = field(default_factory=dict)
    webhooks: dict[str, _Webhook] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)


def _object_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _metadata(value: Any, param: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _StripeError(400, f"Invalid {param}: an object of strings", param=param)
    return dict(value)


def _positive_int(value: Any, param: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0 or (number == 0 and param.endswith("quantity")):
        raise _StripeError(400, f"Invalid integer: {value!r}", param=param)
    return number


def _required_str(params: dict[str, Any], name: str, param: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise _StripeError(400, f"Missing required param: {param}.", param=param)
    return value


def _sub_params(params: dict[str, Any], name: str, wrong_mode: str) -> dict[str, str]:
    """payment_intent_data / subscription_data: only `metadata`, only in its mode."""
    value = params.get(name)
    if value is None:
        return {}
    if params["mode"] == wrong_mode or not isinstance(value, dict):
        raise _StripeError(400, f"You can not pass `{name}` in `{params['mode']}` mode.")
    unknown = sorted(set(value) - {"metadata"})
    if unknown:
        raise _StripeError(400, f"Received unknown parameter: {name}[{unknown[0]}]")
    return _metadata(value.get("metadata"), f"{name}[metadata]")


def _price_data_line(data: Any, quantity: int, mode: str, param: str) -> _Line:
    if not isinstance(data, dict):
        raise _StripeError(400, f"Invalid {param}", param=param)
    currency = _required_str(data, "currency", f"{param}[currency]").lower()
    amount = _positive_int(data.get("unit_amount"), f"{param}[unit_amount]")
    product = data.get("product_data")
    name = product.get("name") if isinstance(product, dict) else None
    if not isinstance(name, str) or not name:
        raise _StripeError(400, f"Missing required param: {param}[product_data][name].")
    recurring = data.get("recurring")
    interval = recurring.get("interval") if isinstance(recurring, dict) else None
    if mode == "subscription" and interval not in ("day", "week", "month", "year"):
        raise _StripeError(400, f"A subscription needs {param}[recurring][interval].")
    return _Line(amount, quantity, currency, name, None, interval)


def _plan_line(plan: dict[str, Any], quantity: int) -> _Line:
    name = plan.get("nickname") or plan.get("name") or str(plan["id"])
    return _Line(
        int(plan["amount"]), quantity, str(plan["currency"]), str(name), str(plan["id"]), None
    )


def _public_session(
    session_id: str, params: dict[str, Any], lines: list[_Line], api_base: str
) -> dict[str, Any]:
    currencies = {line.currency for line in lines}
    if len(currencies) != 1:
        raise _StripeError(400, "All line items must have the same currency.", param="line_items")
    total = sum(line.unit_amount * line.quantity for line in lines)
    now = int(time.time())
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": params["mode"],
        "status": "open",
        "payment_status": "unpaid",
        "amount_subtotal": total,
        "amount_total": total,
        "currency": currencies.pop(),
        "customer": params.get("customer"),
        "customer_email": params.get("customer_email"),
        "client_reference_id": params.get("client_reference_id"),
        "metadata": _metadata(params.get("metadata"), "metadata"),
        "success_url": params["success_url"],
        "cancel_url": params.get("cancel_url"),
        "url": f"{api_base}/pay/{session_id}",
        "payment_intent": None,
        "subscription": None,
        "invoice": None,
        "payment_method_types": ["card"],
        "locale": params.get("locale"),
        "livemode": False,
        "created": now,
        "expires_at": now + _SESSION_LIFETIME_S,
    }


def _checked_top_level(params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - _SESSION_PARAMS)
    if unknown:
        raise _StripeError(400, f"Received unknown parameter: {unknown[0]} (not in the test front)")
    if params.get("mode") not in ("payment", "subscription"):
        raise _StripeError(
            400, "Invalid mode: the test front has `payment` and `subscription`.", param="mode"
        )
    _required_str(params, "success_url", "success_url")
    items = params.get("line_items")
    if not isinstance(items, list) or not items:
        raise _StripeError(400, "Missing required param: line_items.", param="line_items")


# -------------------------------------------------------------------- pay page

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Test checkout</title>
<style>body{{font-family:sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}}
#error{{color:#a00}}</style></head>
<body><main>
<h1>Test checkout</h1>
<p>Stripe test front: no real card is charged.</p>
<ul id="items">{items}</ul>
<p>Total: <strong id="amount">{amount}</strong></p>
{error}{body}
</main></body>
</html>
"""
_FORM = """<form id="pay-form" method="post" action="/pay/{id}">
<label for="card">Card</label>
<select id="card" name="card">{options}</select>
<button id="pay" type="submit">Pay {amount}</button>
</form>
<p><a id="cancel" href="/pay/{id}/cancel">Cancel</a></p>
"""


def _money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency.upper()}"


def _page(checkout: _Checkout, *, error: str | None = None, note: str | None = None) -> str:
    session = checkout.public
    amount = _money(session["amount_total"], session["currency"])
    items = "".join(
        f"<li>{html.escape(line.name)} &times; {line.quantity}</li>" for line in checkout.lines
    )
    if session["status"] == "open" and note is None:
        options = "".join(
            f'<option value="{value}">{html.escape(label)}</option>' for value, label in _CARDS
        )
        body = _FORM.format(id=html.escape(session["id"]), options=options, amount=amount)
    else:
        body = f'<p id="status">{html.escape(note or "This checkout is " + session["status"])}</p>'
    shown_error = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _PAGE.format(items=items, amount=amount, error=shown_error, body=body)


def _go_to(url: str | None, what: str) -> Response:
    """A 303 to a loopback address; any other is shown, not followed, so a browser
    driven by a test never leaves the machine."""
    if url is not None and _is_loopback_url(url):
        return RedirectResponse(url, status_code=303)
    shown = html.escape(url or "(none)")
    return HTMLResponse(f'<!doctype html><p id="status">{what}; not following {shown}</p>')


# ---------------------------------------------------------------------- the front


class StripeFront:
    """Checkout and Prices in front of a running `LocalStripe`, on a free 127.0.0.1 port.

    Usage::

        with LocalStripe() as fake, StripeFront(fake) as front:
            front.configure_webhook(receiver.url, "whsec_...")
            client = front.client()   # or stripe_api_base = front.api_base
            session = client.v1.checkout.sessions.create({...})
            front.complete(session.id)  # or a browser at session.url clicks #pay

    Events: `complete` posts ``checkout.session.completed`` to every webhook configured
    here, synchronously and in configuration order, before it returns (each answer is
    in `deliveries`; a failed delivery is recorded, never retried and never raised).
    localstripe posts its own events (``payment_intent.succeeded``; for a subscription
    ``invoice.created``, ``payment_intent.succeeded``, ``invoice.payment_succeeded``,
    ``customer.subscription.created``) from its own process about a second after the
    payment, so they arrive *after* ``checkout.session.completed``.  Completions run one
    at a time; API calls and showing the pay page never wait for them.  From a
    coroutine whose event loop also serves the webhook (an app run in-process), use
    `complete_async`: the blocking `complete` would stall the loop that must answer.

    Unlike real Stripe: sessions live in this object's memory (not in localstripe, so
    ``flush`` leaves them, and ``/v1/events`` does not list the front's events); a
    `price` is a localstripe plan, always recurring, accepted in payment mode too; a
    session create refuses parameters outside a small known set; an Idempotency-Key
    on a session create is honoured (same body: the same session; another body: 400),
    while localstripe still ignores it everywhere else; sessions never expire by
    themselves (`expire` does it); the pay page redirects only to loopback URLs.
    """

    def __init__(
        self,
        localstripe: LocalStripe,
        *,
        start_timeout: float = _START_TIMEOUT_S,
        port: int = 0,
    ):
        # port 0: a free one (tests); a fixed one for `python -m tokenbank.testing.stripe_sandbox`.
        self._requested_port = port
        self._localstripe = localstripe
        self._start_timeout = start_timeout
        self._state = _State()
        # One completion at a time: localstripe's client session is not for sharing,
        # and events reach the webhooks in the order the sessions were completed.
        self._completing = threading.Lock()
        self._backend: stripe.StripeClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._listener: socket.socket | None = None
        self._sessions: list[requests.Session] = []

    # ----------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("StripeFront is not running; call start() first")
        return self._port

    @property
    def api_base(self) -> str:
        """The SDK's base address (tokenbank's ``stripe_api_base``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def deliveries(self) -> list[Delivery]:
        """Every event post the front made, oldest first."""
        with self._state.lock:
            return list(self._state.deliveries)

    def session(self, session_id: str) -> dict[str, Any]:
        """A copy of the session as ``GET /v1/checkout/sessions/{id}`` answers it."""
        with self._state.lock:
            checkout = self._state.sessions.get(session_id)
            if checkout is None:
                raise UnknownSession(session_id)
            copied: dict[str, Any] = json.loads(json.dumps(checkout.public))
            return copied

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StripeFront:
        """Serve on a free loopback port, in a thread, and wait until it listens."""
        if self._thread is not None:
            raise RuntimeError("StripeFront already started")
        if not self._localstripe.running:
            raise RuntimeError("StripeFront needs a running LocalStripe")
        self._backend = self._localstripe.client()
        self._listener = listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((HOST, self._requested_port))
            listener.listen(128)
            self._port = int(listener.getsockname()[1])
            self._serve(listener)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server thread this object started; close its clients. Idempotent."""
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=_STOP_TIMEOUT_S)
        listener, self._listener = self._listener, None
        if listener is not None:  # uvicorn closes it on shutdown, not if it never started
            listener.close()
        self._port = None
        self._backend = None  # its session belongs to the LocalStripe, which closes it

    def __enter__(self) -> StripeFront:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, secret_key: str = DEFAULT_SECRET_KEY) -> stripe.StripeClient:
        """The official SDK pointed at the front, without retries (see LocalStripe.client)."""
        session = requests.Session()
        session.trust_env = False  # never through a proxy from the environment
        self._sessions.append(session)
        return stripe.StripeClient(
            secret_key,
            base_addresses={"api": self.api_base},
            http_client=stripe.RequestsClient(session=session, timeout=_REQUEST_TIMEOUT_S),
            max_network_retries=0,
        )

    # ------------------------------------------------------------------- webhooks

    def configure_webhook(
        self,
        url: str,
        secret: str,
        events: list[str] | None = None,
        *,
        name: str = DEFAULT_WEBHOOK_NAME,
    ) -> None:
        """Post the front's events (of `events`, or all) to `url` signed with `secret`,
        and make localstripe post its own there too (same name, same secret)."""
        self._localstripe.configure_webhook(url, secret, events, name=name)
        hook = _Webhook(url, secret, frozenset(events) if events is not None else None)
        with self._state.lock:
            self._state.webhooks[name] = hook

    def remove_webhook(self, name: str = DEFAULT_WEBHOOK_NAME) -> None:
        with self._state.lock:
            self._state.webhooks.pop(name, None)
        self._localstripe.remove_webhook(name)

    # ------------------------------------------------------------------ completion

    def complete(self, session_id: str, *, card: str = "pm_card_visa") -> dict[str, Any]:
        """Pay the open session `session_id` with `card` (a payment method id), mark it
        complete and paid, post ``checkout.session.completed`` (synchronously: every
        configured webhook has answered when this returns), and return the session.

        Raises UnknownSession, SessionNotOpen, or CheckoutPaymentFailed (the session
        stays open and can be paid again, as on Stripe's page)."""
        with self._completing:
            checkout = self._claim(session_id)
            try:
                changes = (
                    self._subscribe(checkout, card)
                    if checkout.public["mode"] == "subscription"
                    else self._pay(checkout, card)
                )
            finally:
                with self._state.lock:
                    checkout.busy = False
            changes.update({"status": "complete", "payment_status": "paid", "url": None})
            return self._finish(checkout, changes, "checkout.session.completed")

    async def complete_async(
        self, session_id: str, *, card: str = "pm_card_visa"
    ) -> dict[str, Any]:
        """`complete` in a worker thread, so this event loop keeps serving meanwhile."""
        return await asyncio.to_thread(self.complete, session_id, card=card)

    def expire(self, session_id: str) -> dict[str, Any]:
        """Expire an open session now and post ``checkout.session.expired``."""
        with self._completing:
            checkout = self._claim(session_id)
            with self._state.lock:
                checkout.busy = False
            return self._finish(
                checkout, {"status": "expired", "url": None}, "checkout.session.expired"
            )

    def _claim(self, session_id: str) -> _Checkout:
        with self._state.lock:
            checkout = self._state.sessions.get(session_id)
            if checkout is None:
                raise UnknownSession(session_id)
            if checkout.public["status"] != "open" or checkout.busy:
                raise SessionNotOpen(f"{session_id} is {checkout.public['status']}")
            checkout.busy = True
            return checkout

    def _finish(self, checkout: _Checkout, changes: dict[str, Any], event: str) -> dict[str, Any]:
        with self._state.lock:
            checkout.public.update(changes)
            snapshot: dict[str, Any] = json.loads(json.dumps(checkout.public))
        self._deliver(event, snapshot)
        return snapshot

    def _ls(self) -> stripe.StripeClient:
        if self._backend is None:
            raise RuntimeError("StripeFront is not running; call start() first")
        return self._backend

    def _pay(self, checkout: _Checkout, card: str) -> dict[str, Any]:
        session = checkout.public
        params: dict[str, Any] = {
            "amount": session["amount_total"],
            "currency": session["currency"],
            "payment_method": card,
            "confirm": True,
        }
        if session["customer"]:
            params["customer"] = session["customer"]
        if checkout.intent_metadata:
            params["metadata"] = checkout.intent_metadata
        try:
            intent = self._ls().v1.payment_intents.create(cast(Any, params))
        except stripe.CardError as error:
            raise CheckoutPaymentFailed(_reason(error), self._intent_of(error)) from error
        if intent.status != "succeeded":
            raise CheckoutPaymentFailed(f"the payment is {intent.status}", intent.id)
        return {"payment_intent": intent.id}

    def _intent_of(self, error: stripe.CardError) -> str | None:
        """The failed PaymentIntent: localstripe names only the charge in the error."""
        charge = error.error.charge if error.error is not None else None
        if not charge:
            return None
        found = self._ls().v1.charges.retrieve(charge).payment_intent
        return found if isinstance(found, str) else None

    def _subscribe(self, checkout: _Checkout, card: str) -> dict[str, Any]:
        customer = checkout.public["customer"] or self._ls().v1.customers.create().id
        try:
            method = self._ls().v1.payment_methods.attach(card, {"customer": customer})
        except stripe.CardError as error:
            raise CheckoutPaymentFailed(_reason(error), None) from error
        self._ls().v1.customers.update(
            customer, {"invoice_settings": {"default_payment_method": method.id}}
        )
        items = [
            {"plan": self._plan_of(line), "quantity": line.quantity} for line in checkout.lines
        ]
        params: dict[str, Any] = {"customer": customer, "items": items}
        if checkout.subscription_metadata:
            params["metadata"] = checkout.subscription_metadata
        subscription = self._ls().v1.subscriptions.create(cast(Any, params))
        if subscription.status not in ("active", "trialing"):
            # Stripe's page would refuse the card and create nothing: leave nothing behind.
            self._ls().v1.subscriptions.cancel(subscription.id)
            raise CheckoutPaymentFailed("Your card was declined.", None)
        return {
            "customer": customer,
            "subscription": subscription.id,
            "invoice": subscription.latest_invoice,
        }

    def _plan_of(self, line: _Line) -> str:
        """The line's plan; a `price_data` line gets one made for it, as Stripe does."""
        if line.plan is not None:
            return line.plan
        plan = self._ls().v1.plans.create(
            {
                "amount": line.unit_amount,
                "currency": line.currency,
                "interval": cast(Any, line.interval),
                "product": {"name": line.name},
            }
        )
        return plan.id

    def _deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        with self._state.lock:
            hooks = [
                hook
                for hook in self._state.webhooks.values()
                if hook.events is None or event_type in hook.events
            ]
        event = _event(event_type, obj, len(hooks))
        payload = json.dumps(event)
        for hook in hooks:
            header = stripe.WebhookSignature.generate_signature_header(
                payload, hook.secret, event["created"]
            )
            status, error = _post(hook.url, payload, str(header))
            delivery = Delivery(hook.url, event["id"], event_type, status, error)
            with self._state.lock:
                self._state.deliveries.append(delivery)

    # ---------------------------------------------------------------- the server

    def _serve(self, listener: socket.socket) -> None:
        config = uvicorn.Config(
            self._app(),
            lifespan="on",
            log_config=None,  # leave the process's logging alone
            access_log=False,
            http="h11",
            ws="none",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [listener]},
            daemon=True,
            name="stripe-front",
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Stripe front did not start")
            time.sleep(0.02)

    def _app(self) -> Starlette:
        routes = [
            Route("/v1/checkout/sessions", self._create_session, methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", self._retrieve_session, methods=["GET"]),
            Route("/v1/prices/{id}", self._retrieve_price, methods=["GET"]),
            Route("/v1/payment_intents", self._list_intents, methods=["GET"]),
            Route("/v1/{path:path}", self._forward, methods=_METHODS),
            Route("/pay/{id}", self._pay_page, methods=["GET"]),
            Route("/pay/{id}", self._pay_submit, methods=["POST"]),
            Route("/pay/{id}/cancel", self._pay_cancel, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={_StripeError: _answer_error},
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Created in the server's own event loop, closed there when it stops.
        async with httpx.AsyncClient(
            base_url=self._localstripe.api_base, trust_env=False, timeout=_REQUEST_TIMEOUT_S
        ) as http:
            self._http = http
            yield
        self._http = None

    # -------------------------------------------------------------- API handlers

    async def _create_session(self, request: Request) -> Response:
        _authorize(request)
        body = (await request.body()).decode("utf-8", errors="replace")
        key = request.headers.get("idempotency-key")
        replayed = self._replayed(key, body)
        if replayed is not None:
            return JSONResponse(replayed)
        params = _decoded(body)
        _checked_top_level(params)
        intent_metadata = _sub_params(params, "payment_intent_data", "subscription")
        subscription_metadata = _sub_params(params, "subscription_data", "payment")
        await self._check_customer(request, params.get("customer"))
        lines = [
            await self._line(request, item, params["mode"], n)
            for n, item in enumerate(params["line_items"])
        ]
        session_id = _object_id("cs_test_")
        public = _public_session(session_id, params, lines, self.api_base)
        checkout = _Checkout(public, lines, intent_metadata, subscription_metadata)
        return JSONResponse(self._store(checkout, key, body))

    def _replayed(self, key: str | None, body: str) -> dict[str, Any] | None:
        """The session an earlier create with this Idempotency-Key made, as Stripe
        answers a retry; a different body under the same key is refused."""
        if key is None:
            return None
        with self._state.lock:
            earlier = self._state.idempotency.get(key)
            if earlier is None:
                return None
            if earlier.body_digest != _digest(body):
                raise _StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters"
                    " they were first used with.",
                    kind="idempotency_error",
                )
            return dict(self._state.sessions[earlier.session_id].public)

    def _store(self, checkout: _Checkout, key: str | None, body: str) -> dict[str, Any]:
        session_id = checkout.public["id"]
        with self._state.lock:
            earlier = self._state.idempotency.get(key) if key is not None else None
            if earlier is not None:  # a concurrent retry won the race
                return dict(self._state.sessions[earlier.session_id].public)
            self._state.sessions[session_id] = checkout
            if key is not None:
                self._state.idempotency[key] = _Idempotent(_digest(body), session_id)
            return dict(checkout.public)

    async def _check_customer(self, request: Request, customer: Any) -> None:
        if customer is None:
            return
        if not isinstance(customer, str) or not customer.startswith("cus_"):
            raise _missing("customer", str(customer), "customer")
        answer = await self._backend_get(request, f"/v1/customers/{customer}")
        if answer.status_code != 200 or answer.json().get("deleted"):
            raise _missing("customer", customer, "customer")

    async def _line(self, request: Request, item: Any, mode: str, n: int) -> _Line:
        param = f"line_items[{n}]"
        if not isinstance(item, dict):
            raise _StripeError(400, f"Invalid {param}", param=param)
        unknown = sorted(set(item) - {"price", "price_data", "quantity"})
        if unknown:
            raise _StripeError(400, f"Received unknown parameter: {param}[{unknown[0]}]")
        if ("price" in item) == ("price_data" in item):
            raise _StripeError(400, f"{param} needs one of `price` or `price_data`", param=param)
        quantity = _positive_int(item.get("quantity", "1"), f"{param}[quantity]")
        if "price_data" in item:
            return _price_data_line(item["price_data"], quantity, mode, f"{param}[price_data]")
        plan = await self._plan(request, str(item["price"]), f"{param}[price]")
        return _plan_line(plan, quantity)

    async def _plan(self, request: Request, price_id: str, param: str) -> dict[str, Any]:
        if not price_id or "/" in price_id:
            raise _missing("price", price_id, param)
        answer = await self._backend_get(request, f"/v1/plans/{urllib.parse.quote(price_id)}")
        if answer.status_code == 404:
            raise _missing("price", price_id, param)
        if answer.status_code != 200:
            raise _StripeError(502, f"localstripe answered {answer.status_code}", kind="api_error")
        plan: dict[str, Any] = answer.json()
        return plan

    async def _retrieve_session(self, request: Request) -> Response:
        _authorize(request)
        session_id = request.path_params["id"]
        try:
            return JSONResponse(self.session(session_id))
        except UnknownSession:
            raise _missing("checkout.session", session_id, "id") from None

    async def _retrieve_price(self, request: Request) -> Response:
        _authorize(request)
        return JSONResponse(_price(await self._plan(request, request.path_params["id"], "id")))

    async def _forward(self, request: Request) -> Response:
        path = request.path_params["path"]
        if path.startswith(("checkout/", "prices")) or path == "checkout":
            raise _StripeError(
                404,
                f"Unrecognized request URL ({request.method}: /v1/{path}): the test front"
                " has only checkout session create/retrieve and price retrieve.",
            )
        answer = await self._backend_request(
            request.method,
            request.url.path,
            query=request.url.query,
            headers=_forwarded_headers(request),
            body=await request.body(),
        )
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    async def _list_intents(self, request: Request) -> Response:
        """PaymentIntents, with Stripe's ``created[gte|gt|lte|lt]`` filters, which
        localstripe refuses: they are applied here to what it lists."""
        query = urllib.parse.parse_qsl(request.url.query)
        bounds = {key[8:-1]: int(value) for key, value in query if key.startswith("created[")}
        rest = urllib.parse.urlencode([(k, v) for k, v in query if not k.startswith("created")])
        answer = await self._backend_request(
            "GET", request.url.path, query=rest, headers=_forwarded_headers(request)
        )
        if answer.status_code != 200 or not bounds:
            return Response(answer.content, answer.status_code, media_type="application/json")
        listing = answer.json()
        listing["data"] = [i for i in listing["data"] if _within(i["created"], bounds)]
        return JSONResponse(listing)

    async def _backend_get(self, request: Request, path: str) -> httpx.Response:
        headers = {"authorization": request.headers.get("authorization", "")}
        return await self._backend_request("GET", path, headers=headers)

    async def _backend_request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: dict[str, str],
        body: bytes = b"",
    ) -> httpx.Response:
        if self._http is None:
            raise _StripeError(503, "the Stripe front is stopping", kind="api_error")
        url = f"{path}?{query}" if query else path
        try:
            return await self._http.request(method, url, headers=headers, content=body)
        except httpx.HTTPError as error:
            raise _StripeError(502, f"localstripe unreachable: {error}", kind="api_error") from None

    # ----------------------------------------------------------------- pay page

    def _page_checkout(self, request: Request) -> _Checkout:
        with self._state.lock:
            checkout = self._state.sessions.get(request.path_params["id"])
        if checkout is None:
            raise _StripeError(404, "No such checkout session")
        return checkout

    async def _pay_page(self, request: Request) -> Response:
        checkout = self._page_checkout(request)
        with self._state.lock:
            page = _page(checkout)
        return HTMLResponse(page)

    async def _pay_submit(self, request: Request) -> Response:
        checkout = self._page_checkout(request)
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", errors="replace"))
        card = (form.get("card") or ["pm_card_visa"])[0]
        if not card.startswith("pm_"):
            return HTMLResponse(_page(checkout, error="Choose a card."), status_code=400)
        try:
            # Blocking (localstripe calls, webhook posts): off the event loop, so a
            # webhook handler that calls back into this front is still answered.
            session = await run_in_threadpool(self.complete, checkout.public["id"], card=card)
        except CheckoutPaymentFailed as failed:
            return HTMLResponse(_page(checkout, error=failed.reason), status_code=402)
        except SessionNotOpen:
            return HTMLResponse(_page(checkout), status_code=409)
        success = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
        return _go_to(success, "Paid")

    async def _pay_cancel(self, request: Request) -> Response:
        checkout = self._page_checkout(request)
        return _go_to(checkout.public.get("cancel_url"), "Canceled")


_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]


def _within(created: int, bounds: dict[str, int]) -> bool:
    checks = {
        "gte": created >= bounds.get("gte", created),
        "gt": created > bounds["gt"] if "gt" in bounds else True,
        "lte": created <= bounds.get("lte", created),
        "lt": created < bounds["lt"] if "lt" in bounds else True,
    }
    return all(checks.values())


def _authorize(request: Request) -> None:
    """What localstripe asks of a secret key: ``sk_`` and longer than five characters."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.startswith("sk_") or len(key) <= 5:
        raise _StripeError(401, "Invalid API Key provided.")


def _decoded(body: str) -> dict[str, Any]:
    try:
        return decode_form(body)
    except FormError as error:
        raise _StripeError(400, str(error)) from None


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _forwarded_headers(request: Request) -> dict[str, str]:
    return {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}


def _price(plan: dict[str, Any]) -> dict[str, Any]:
    """A localstripe plan as the Prices API would show it."""
    return {
        "id": plan["id"],
        "object": "price",
        "active": plan.get("active", True),
        "billing_scheme": plan.get("billing_scheme", "per_unit"),
        "created": plan.get("created"),
        "currency": plan["currency"],
        "livemode": False,
        "metadata": plan.get("metadata") or {},
        "nickname": plan.get("nickname"),
        "product": plan.get("product"),
        "recurring": {
            "interval": plan.get("interval"),
            "interval_count": plan.get("interval_count", 1),
            "usage_type": plan.get("usage_type", "licensed"),
        },
        "type": "recurring",
        "unit_amount": plan.get("amount"),
        "unit_amount_decimal": str(plan.get("amount")),
    }


def _reason(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or "the payment failed"


def _event(event_type: str, obj: dict[str, Any], pending: int) -> dict[str, Any]:
    return {
        "id": _object_id("evt_"),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": pending,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def _post(url: str, payload: str, signature: str) -> tuple[int | None, str | None]:
    """POST one event; its status, or why there is none.  Loopback only: every URL
    passed LocalStripe.configure_webhook's check."""
    request = urllib.request.Request(  # noqa: S310 - a loopback URL, checked
        url,
        data=payload.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature},
    )
    try:
        with _direct_opener().open(request, timeout=_REQUEST_TIMEOUT_S) as answer:
            return int(answer.status), None
    except urllib.error.HTTPError as error:
        error.close()
        return error.code, None
    except (urllib.error.URLError, OSError) as error:
        return None, str(error)
