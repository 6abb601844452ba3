"""The app on each engine for sign-in tests, driven with httpx (cookies kept)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings

JWT_SECRET = "a-jwt-secret-of-at-least-thirty-two-bytes!"
PASSWORD = "correct horse battery"


@dataclass
class Site:
    client: httpx.AsyncClient
    services: Services
    clock: ManualClock
    app_key: str

    async def csrf(self, path: str = "/login") -> str:
        """The pre-session CSRF token of a sign-in or sign-up form (sets its cookie)."""
        form = await self.client.get(path)
        assert form.status_code == 200, form.text
        return form.cookies.get("tb_csrf") or self.client.cookies["tb_csrf"]

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        token = await self.csrf()
        return await self.client.post(
            "/login", data={"email": email, "password": password, "csrf_token": token}
        )


@pytest.fixture
async def site(database_url: str, clock: ManualClock) -> AsyncIterator[Site]:
    settings = Settings(
        database_url=database_url,
        welcome_bonus_tokens=1_000,
        hold_sweep_interval_seconds=0,
        sign_in_slowdown_seconds=0,  # the slowing is tested on the service
        jwt_secret=SecretStr(JWT_SECRET),
    )
    service = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
    app = create_app(settings, token_service=service, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        _, key = await services.apps.create_app("app", scopes=["read"])
        await service.open_wallet("bob")
        await services.accounts.create("bob@example.com", PASSWORD, user_id="bob")
        await services.accounts.create("root@example.com", PASSWORD, role="superadmin")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokenbank.test") as c:
            yield Site(client=c, services=services, clock=clock, app_key=key)
    await service.close()
