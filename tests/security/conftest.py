"""Security fixtures: the ASGI app on each engine with keys of every kind.

Besides a key per scope (as ``tests/api`` has), ``secured`` issues the keys that must
be refused: one revoked, one rotated out whose grace period has passed (both used
once first, so that the key cache holds them), and it sets the single-app key
(``TOKENBANK_API_KEY``) and a JWT secret, so that no secret of any kind is missing
from the searches of ``test_secrets``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.apps.keys import generate_key
from tokenbank.config import Settings
from tokenbank.db.models import API_SCOPES
from tokenbank.testing.localstripe import LocalStripe
from tokenbank.testing.stripe_front import StripeFront

PUBLIC_URL = "https://tokens.example.test"
# Secrets of the deployment itself, distinctive enough to search for.
ENV_API_KEY = generate_key()
JWT_SECRET = "jwt-secret-" + generate_key()[3:]
ROTATION_GRACE_SECONDS = 60
STRIPE_SECRET_KEY = "sk_test_" + generate_key()[3:]
STRIPE_WEBHOOK_SECRET = "whsec_" + generate_key()[3:]


@dataclass
class Secured:
    app: FastAPI
    client: httpx.AsyncClient
    services: Services
    clock: ManualClock
    settings: Settings
    # "all", each scope, "env" (TOKENBANK_API_KEY), "rotated" (the new key after a
    # rotation), and the refused ones: "revoked", "expired" (the rotated-out key).
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> TokenService:
        return self.services.tokens

    async def engine(self) -> AsyncEngine:
        return await self.tokens.engine()

    def secrets(self) -> dict[str, str]:
        """Every secret this deployment knows, by name."""
        return {
            **{f"key:{name}": key for name, key in self.keys.items()},
            "jwt": JWT_SECRET,
            "stripe": STRIPE_SECRET_KEY,
            "stripe-webhook": STRIPE_WEBHOOK_SECRET,
        }


async def table_rows(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (reflected, so a new table is never missed), sorted."""
    metadata = MetaData()
    async with engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for table in metadata.sorted_tables:
            result = await conn.execute(select(table))
            rows[table.name] = sorted((tuple(row) for row in result), key=repr)
    return rows


async def issue_keys(services: Services, clock: ManualClock) -> dict[str, str]:
    apps = services.apps
    keys: dict[str, str] = {}
    _, keys["all"] = await apps.create_app("test-app", scopes=list(API_SCOPES))
    for scope in API_SCOPES:
        _, keys[scope] = await apps.create_app(f"only-{scope}", scopes=[scope])

    _, keys["revoked"] = await apps.create_app("revoked-app", scopes=list(API_SCOPES))
    assert await apps.authenticate(keys["revoked"]) is not None  # now cached
    assert await apps.revoke_keys("revoked-app") == 1

    _, keys["expired"] = await apps.create_app("rotated-app", scopes=list(API_SCOPES))
    keys["rotated"] = await apps.rotate_key(
        "rotated-app", old_key_expires_in_seconds=ROTATION_GRACE_SECONDS
    )
    assert await apps.authenticate(keys["expired"]) is not None  # in its grace: cached
    clock.advance(ROTATION_GRACE_SECONDS + 1)
    keys["env"] = ENV_API_KEY
    return keys


@pytest.fixture(scope="session")
def stripe_api_base() -> Iterator[str]:
    """Payments call Stripe: a localstripe behind the test front (Checkout, prices)."""
    with LocalStripe() as localstripe, StripeFront(localstripe) as front:
        yield front.api_base


@pytest.fixture
async def secured(
    database_url: str, clock: ManualClock, stripe_api_base: str
) -> AsyncIterator[Secured]:
    settings = Settings(
        database_url=database_url,
        public_url=PUBLIC_URL,
        welcome_bonus_tokens=0,
        hold_sweep_interval_seconds=0,
        api_key=SecretStr(ENV_API_KEY),
        jwt_secret=SecretStr(JWT_SECRET),
        stripe_secret_key=SecretStr(STRIPE_SECRET_KEY),
        stripe_webhook_secret=SecretStr(STRIPE_WEBHOOK_SECRET),
        stripe_api_base=stripe_api_base,
    )
    service = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        keys = await issue_keys(services, clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test") as c:
            yield Secured(
                app=app, client=c, services=services, clock=clock, settings=settings, keys=keys
            )
    await service.close()
