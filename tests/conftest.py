"""Shared fixtures: every ledger test runs on SQLite and on a PostgreSQL we start.

Each test database is built by the migrations: a template is migrated once per
session (a SQLite file, a PostgreSQL template database) and copied for each test,
so every test starts from exactly what ``tokenbank db upgrade`` produces.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import fastapi.dependencies.models as fastapi_models
import pytest

from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import upgrade
from tokenbank.testing.postgres import PostgresServer, quote_ident

ENGINES = ["sqlite", "postgresql"]
# FastAPI keeps the last 4,096 endpoint and dependency functions it classified (sync,
# coroutine, generator) in module-level caches, and tokenbank's are closures over
# their app: the caches held every app of the last few dozen tests, over a million
# objects, which the collector walked at each full collection (pauses of 1-2 s in a
# full run, long enough to time a test's request out). One app per process, as
# served, keeps one app's worth. Looked up by name: gone in another FastAPI, nothing.
_FASTAPI_CALLABLE_CACHES = (
    "_is_gen_callable_cached",
    "_is_async_gen_callable_cached",
    "_is_coroutine_callable_cached",
)
PG_TEMPLATE = "tokenbank_template"
_database_numbers = itertools.count()


async def _migrate(url: str) -> None:
    engine = create_engine(url, Settings())
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of ``slow`` tests first (a stable sort: otherwise in collection order).

    `make test` runs the suite in two processes that take a file at a time
    (pytest-xdist, ``--dist loadfile --no-loadscope-reorder``): started first, the
    crash and benchmark files, minutes each, run beside the rest instead of alone
    at the end, where they made a tail of five minutes."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(autouse=True)
def _forget_finished_apps() -> Iterator[None]:
    yield
    for name in _FASTAPI_CALLABLE_CACHES:
        cache = getattr(fastapi_models, name, None)
        if cache is not None and hasattr(cache, "cache_clear"):
            cache.cache_clear()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        server.create_database(PG_TEMPLATE)
        asyncio.run(_migrate(server.async_url(PG_TEMPLATE)))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _on_postgres_database(server: PostgresServer, sql: str) -> None:
    """One statement on the server's ``postgres`` database, by asyncpg: the server's own
    ``create_database`` and ``drop_database`` start psql, a process per test."""
    connection = await asyncpg.connect(server.sync_dsn("postgres"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _create_pg_database(server: PostgresServer, name: str) -> None:
    template = quote_ident(PG_TEMPLATE)
    await _on_postgres_database(server, f"CREATE DATABASE {quote_ident(name)} TEMPLATE {template}")


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _drop_pg_database(server: PostgresServer, name: str) -> None:
    # FORCE: a test that failed may have left a pool or a server process connected.
    await _on_postgres_database(server, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.fixture
def database_url(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database of the parametrized engine."""
    if engine_name == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "tokenbank.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"test_{next(_database_numbers)}"
    asyncio.run(_create_pg_database(server, name))
    yield server.async_url(name)
    # Dropped, not kept: a full run creates over a thousand databases of about 9 MB,
    # and stopping the server then removing their files took a minute at the end.
    asyncio.run(_drop_pg_database(server, name))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def service(database_url: str, clock: ManualClock) -> AsyncIterator[TokenService]:
    async with TokenService(
        database_url, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as token_service:
        yield token_service
