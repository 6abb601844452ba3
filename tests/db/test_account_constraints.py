"""The database itself refuses bad accounts, sessions and widget origins (migrations
0010 and 0011), with the Python layer bypassed; each refusal next to rows it accepts.
Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.db.rows import accepted, engine_with_ann, refused
from tokenbank.accounts.repository import accounts, attempts, sessions
from tokenbank.apps.repository import origins

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HASH = "a" * 64


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async for engine in engine_with_ann(database_url):
        yield engine


def account(email: str, **changes: Any) -> dict[str, Any]:
    return {
        "email": email,
        "password_hash": "$argon2id$...",
        "role": "user",
        "created_at": NOW,
        "updated_at": NOW,
        **changes,
    }


async def test_account_rows(engine: AsyncEngine) -> None:
    await accepted(engine, accounts, account("ann@example.com", user_id="ann"))
    await accepted(engine, accounts, account("root@example.com", role="superadmin"))
    for bad in (
        account("Ann@Example.com"),  # stored lowercased
        account("no-at-sign"),
        account("x@example.com", role="owner"),
        account("ann@example.com"),  # taken
        account("y@example.com", user_id="ann"),  # one account per wallet
        account("z@example.com", user_id="nobody"),  # no such wallet
    ):
        await refused(engine, accounts, bad)


async def test_session_and_attempt_rows(engine: AsyncEngine) -> None:
    await accepted(engine, accounts, account("ann@example.com", user_id="ann"))
    good = {
        "token_hash": HASH,
        "account_id": 1,
        "csrf_token": "c",
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
    }
    await accepted(engine, sessions, good)
    await refused(engine, sessions, {**good, "token_hash": "b" * 63})  # a hash, not a token
    await refused(engine, sessions, {**good, "token_hash": "c" * 64, "expires_at": NOW})
    await refused(engine, sessions, {**good, "token_hash": "d" * 64, "account_id": 999})
    row = {"email_hash": HASH, "failures": 1, "last_failure_at": NOW}
    await accepted(engine, attempts, row)
    await refused(engine, attempts, {**row, "email_hash": "e" * 64, "failures": -1})


async def test_an_origin_belongs_to_a_registered_app(engine: AsyncEngine) -> None:
    await refused(
        engine, origins, {"app_id": 999, "origin": "https://app.example.com", "created_at": NOW}
    )
