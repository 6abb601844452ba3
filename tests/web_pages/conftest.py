"""The signed-in user's pages, driven with httpx over ASGI on both engines.

``site``: the app with Stripe at a Stripe front (localstripe plus Checkout) for the
session, the default packs, and two users with wallets and sessions: alice and bob
(``site.alice`` and ``site.bob`` are clients carrying their session cookies;
``site.anonymous`` carries none). Stripe.js is never loaded (``stripe_js_url`` is
empty), so no page names js.stripe.com. The books must pass the audit after each
test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.payments.support import stripe_settings
from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings
from tokenbank.testing.localstripe import LocalStripe
from tokenbank.testing.stripe_front import StripeFront
from tokenbank.web.auth import SESSION_COOKIE

BASE_URL = "http://tokenbank.test"
PASSWORD = "correct horse battery"


@dataclass
class Site:
    app: FastAPI
    services: Services
    clock: ManualClock
    alice: httpx.AsyncClient
    bob: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    csrf: dict[str, str]  # user id -> the session's CSRF token

    @property
    def tokens(self) -> TokenService:
        return self.services.tokens

    async def post(
        self, client: httpx.AsyncClient, path: str, data: dict[str, str], *, csrf: bool = True
    ) -> httpx.Response:
        """A form post as the page sends it, with the session's CSRF token (or not)."""
        user = "alice" if client is self.alice else "bob"
        form = {**data, "csrf_token": self.csrf[user]} if csrf else data
        return await client.post(path, data=form)


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


@pytest.fixture(scope="session")
def stripe_front(localstripe: LocalStripe) -> Iterator[StripeFront]:
    with StripeFront(localstripe) as front:
        yield front


def site_settings(database_url: str, api_base: str, **changes: Any) -> Settings:
    return stripe_settings(api_base).model_copy(
        update={
            "database_url": database_url,
            "welcome_bonus_tokens": 0,
            "hold_sweep_interval_seconds": 0,
            "stripe_js_url": "",
            "public_url": BASE_URL,
            # The usage tests move the clock weeks on: sessions outlast them.
            "session_ttl_hours": 24 * 90,
            **changes,
        }
    )


async def _signed_in(services: Services, user_id: str, transport: httpx.AsyncBaseTransport) -> Any:
    await services.tokens.open_wallet(user_id)
    account = await services.accounts.create(f"{user_id}@example.com", PASSWORD, user_id=user_id)
    session = await services.accounts.start_session(account)
    client = httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, cookies={SESSION_COOKIE: session.token}
    )
    return client, session.signed_in.csrf_token


@asynccontextmanager
async def running_site(settings: Settings, clock: ManualClock) -> AsyncIterator[Site]:
    service = TokenService(
        settings.database_url, settings=settings, clock=clock, auto_migrate=False
    )
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        await (await services.payments.packs()).seed_defaults()
        transport = httpx.ASGITransport(app=app)
        alice, alice_csrf = await _signed_in(services, "alice", transport)
        bob, bob_csrf = await _signed_in(services, "bob", transport)
        anonymous = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
        async with alice, bob, anonymous:
            yield Site(
                app,
                services,
                clock,
                alice,
                bob,
                anonymous,
                {"alice": alice_csrf, "bob": bob_csrf},
            )
        assert (await service.audit()).ok
    await service.close()


@pytest.fixture
async def site(
    database_url: str, clock: ManualClock, stripe_front: StripeFront
) -> AsyncIterator[Site]:
    async with running_site(site_settings(database_url, stripe_front.api_base), clock) as s:
        yield s
