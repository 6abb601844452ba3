"""API test fixtures: the ASGI app on each engine, driven with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings
from tokenbank.db.models import API_SCOPES

PUBLIC_URL = "https://tokens.example.test"


@dataclass
class Api:
    """A client of the app plus the app's services, for setting up and checking state."""

    client: httpx.AsyncClient
    services: Services
    clock: ManualClock
    keys: dict[str, str]  # scope name ("all" for every scope) -> API key
    app: FastAPI

    def headers(self, scope: str = "all", *, style: str = "bearer") -> dict[str, str]:
        key = self.keys[scope]
        if style == "bearer":
            return {"Authorization": f"Bearer {key}"}
        return {"x-server-api-key": key}

    @property
    def tokens(self) -> TokenService:
        return self.services.tokens


@pytest.fixture
async def api(database_url: str, clock: ManualClock) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=database_url,
        public_url=PUBLIC_URL,
        welcome_bonus_tokens=0,
        hold_sweep_interval_seconds=0,
    )
    service = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        keys: dict[str, str] = {}
        _, keys["all"] = await services.apps.create_app("test-app", scopes=list(API_SCOPES))
        for scope in API_SCOPES:
            _, keys[scope] = await services.apps.create_app(f"only-{scope}", scopes=[scope])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test") as c:
            yield Api(client=c, services=services, clock=clock, keys=keys, app=app)
    await service.close()
