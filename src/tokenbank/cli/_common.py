"""What every command shares: the ``--database-url`` option, ``run()`` and the services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

from tokenbank.apps.service import AppService
from tokenbank.cli._errors import expected_errors, fail
from tokenbank.config import get_settings
from tokenbank.db.migrate import current_revision, head_revision
from tokenbank.ledger.service import TokenService
from tokenbank.plans.service import PlanService
from tokenbank.pricing.service import PricingService

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TOKENBANK_DATABASE_URL",
        help="SQLAlchemy URL (default: a SQLite file tokenbank.db in this directory).",
        show_envvar=True,
    ),
]

ProfitOption = Annotated[
    str | None,
    typer.Option("--profit-percent", help="Profit on top of the base cost, e.g. 20 or 12.5."),
]


def group(help_text: str) -> typer.Typer:
    """A command group that shows its help when called without a command."""
    return typer.Typer(help=help_text, no_args_is_help=True)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; every expected failure becomes ``CommandFailed``."""
    with expected_errors():
        return asyncio.run(coroutine)


def database_url_or_default(database_url: str | None) -> str:
    return database_url or get_settings().database_url


async def with_service(
    database_url: str | None, action: Callable[[TokenService], Awaitable[T]]
) -> T:
    """Open the service on a migrated database (refusing an unmigrated one) and act."""
    url = database_url_or_default(database_url)
    async with TokenService(url, auto_migrate=False) as service:
        current = await current_revision(await service.engine())
        if current != head_revision():
            fail("the database is not migrated: run `tokenbank db upgrade` first")
        return await action(service)


async def with_apps(database_url: str | None, action: Callable[[AppService], Awaitable[T]]) -> T:
    """``with_service`` for the app registry."""

    async def act(service: TokenService) -> T:
        return await action(AppService(await service.engine()))

    return await with_service(database_url, act)


async def with_plans(database_url: str | None, action: Callable[[PlanService], Awaitable[T]]) -> T:
    """``with_service`` for plans and features."""

    async def act(service: TokenService) -> T:
        return await action(PlanService(await service.engine()))

    return await with_service(database_url, act)


async def with_pricing(
    database_url: str | None, action: Callable[[PricingService], Awaitable[T]]
) -> T:
    """``with_service`` for model rates."""

    async def act(service: TokenService) -> T:
        return await action(PricingService(await service.engine(), settings=get_settings()))

    return await with_service(database_url, act)
