"""Ledger fixtures: a service on each write path (the batch kernel and one by one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings


@pytest.fixture(params=["group_commit", "commit_each"])
async def bank(
    request: pytest.FixtureRequest, database_url: str, clock: ManualClock
) -> AsyncIterator[TokenService]:
    """No welcome bonus; group commit (the batch kernel) or each operation alone."""
    settings = Settings(group_commit=request.param == "group_commit")
    async with TokenService(
        database_url, settings=settings, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        yield service
