"""Payment test fixtures: one localstripe for the session, a webhook receiver per test,
and one Stripe front (localstripe plus Checkout and Prices) for the session.

The localstripe is shared (it starts in a fraction of a second, but its state is the
point of most tests): tests make their own customers and objects and look only at
those; a test that needs an empty store calls ``localstripe.flush()`` itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import stripe

from tests.api.conftest import Api
from tests.payments.support import WEBHOOK_SECRET, stripe_settings
from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.db.models import API_SCOPES
from tokenbank.testing.localstripe import LocalStripe, WebhookReceiver
from tokenbank.testing.stripe_front import StripeFront


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


@pytest.fixture
async def api(
    database_url: str, clock: ManualClock, localstripe: LocalStripe
) -> AsyncIterator[Api]:
    """The app on each engine with Stripe at the session's localstripe: a key for
    every scope and one with all ("all"), the default packs, alice's wallet. The books
    must pass the audit after the test."""
    settings = stripe_settings(localstripe.api_base).model_copy(
        update={
            "database_url": database_url,
            "welcome_bonus_tokens": 0,
            "hold_sweep_interval_seconds": 0,
        }
    )
    service = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        keys: dict[str, str] = {}
        _, keys["all"] = await services.apps.create_app("shop", scopes=list(API_SCOPES))
        for scope in API_SCOPES:
            _, keys[scope] = await services.apps.create_app(f"only-{scope}", scopes=[scope])
        await (await services.payments.packs()).seed_defaults()
        await service.open_wallet("alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test") as c:
            yield Api(client=c, services=services, clock=clock, keys=keys, app=app)
        assert (await service.audit()).ok
    await service.close()
