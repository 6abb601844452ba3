"""Payment test fixtures: one localstripe for the session, a webhook receiver per test,
and one Stripe front (localstripe plus Checkout and Prices) for the session.

The localstripe is shared (it starts in a fraction of a second, but its state is the
point of most tests): tests make their own customers and objects and look only at
those; a test that needs an empty store calls ``localstripe.flush()`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from tokenbank.testing.localstripe import LocalStripe, WebhookReceiver
from tokenbank.testing.stripe_front import StripeFront

WEBHOOK_SECRET = "whsec_tokenbank_test_secret"


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


@pytest.fixture
def stripe_client(localstripe: LocalStripe) -> stripe.StripeClient:
    """The official SDK, pointed at the session's localstripe, without retries."""
    return localstripe.client()


@pytest.fixture
def webhook_receiver(localstripe: LocalStripe) -> Iterator[WebhookReceiver]:
    """A loopback receiver that localstripe posts every event to, signed with
    WEBHOOK_SECRET, for the duration of one test."""
    with WebhookReceiver() as receiver:
        localstripe.configure_webhook(receiver.url, WEBHOOK_SECRET)
        try:
            yield receiver
        finally:
            localstripe.remove_webhook()


@pytest.fixture(scope="session")
def stripe_front(localstripe: LocalStripe) -> Iterator[StripeFront]:
    """Checkout and Prices in front of the session's localstripe (its checkout sessions
    are shared by the session's tests, as localstripe's objects are)."""
    with StripeFront(localstripe) as front:
        yield front


@pytest.fixture
def front_client(stripe_front: StripeFront) -> stripe.StripeClient:
    """The official SDK, pointed at the Stripe front, without retries."""
    return stripe_front.client()


@pytest.fixture
def front_webhook_receiver(stripe_front: StripeFront) -> Iterator[WebhookReceiver]:
    """A loopback receiver that gets both the front's events and localstripe's, signed
    with WEBHOOK_SECRET, for the duration of one test."""
    with WebhookReceiver() as receiver:
        stripe_front.configure_webhook(receiver.url, WEBHOOK_SECRET)
        try:
            yield receiver
        finally:
            stripe_front.remove_webhook()
