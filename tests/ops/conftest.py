"""Operations fixtures: the ASGI app on each engine, and /metrics read back as numbers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tokenbank import ManualClock, TokenService
from tokenbank.api.app import create_app
from tokenbank.api.state import Services
from tokenbank.config import Settings
from tokenbank.db.models import API_SCOPES

WEBHOOK_SECRET = "whsec_ops_test_secret"


@dataclass
class Ops:
    app: FastAPI
    client: httpx.AsyncClient
    services: Services
    keys: dict[str, str]  # "all" (every scope) and one per scope

    def headers(self, scope: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def scrape(self) -> Samples:
        answer = await self.client.get("/metrics", headers=self.headers("admin"))
        assert answer.status_code == 200, answer.text
        return Samples.parse(answer.text)


class Samples:
    """Each sample of a scrape by name and labels; a missing sample reads 0."""

    def __init__(self, values: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
        self.values = values

    @classmethod
    def parse(cls, text: str) -> Samples:
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(values)

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (found, label_set), value in self.values.items()
            if found == name and wanted <= label_set
        )


OpsFactory = Callable[..., AbstractAsyncContextManager[Ops]]


@pytest.fixture
def make_ops(database_url: str, clock: ManualClock) -> OpsFactory:
    """An app with these settings (over the defaults of these tests)."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Ops]:
        settings = Settings(
            **{
                "database_url": database_url,
                "welcome_bonus_tokens": 0,
                "hold_sweep_interval_seconds": 0,
                "stripe_webhook_secret": WEBHOOK_SECRET,
                **overrides,
            }
        )
        service = TokenService(database_url, settings=settings, clock=clock, auto_migrate=False)
        app = create_app(settings, token_service=service, clock=clock)
        try:
            async with app.router.lifespan_context(app):
                services: Services = app.state.services
                keys: dict[str, str] = {}
                apps = services.apps
                tag = uuid.uuid4().hex[:8]  # a test may start two apps on one database
                _, keys["all"] = await apps.create_app(f"ops-{tag}", scopes=list(API_SCOPES))
                for scope in API_SCOPES:
                    _, keys[scope] = await apps.create_app(f"ops-{tag}-{scope}", scopes=[scope])
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://tokenbank.test"
                ) as client:
                    yield Ops(app=app, client=client, services=services, keys=keys)
        finally:
            await service.close()

    return make


@pytest.fixture
async def ops(make_ops: OpsFactory) -> AsyncIterator[Ops]:
    async with make_ops() as made:
        yield made
