"""A PostgreSQL primary and a streaming standby of it, for the session.

``replica``: a fresh database on the primary, migrated, and the standby caught up on
it; the test gets both URLs and the servers. A test that pauses the standby's replay
has it resumed afterwards (the standby is shared by the whole session).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import PG_TEMPLATE, _migrate
from tokenbank.testing.postgres import PostgresServer

_numbers = itertools.count()


@dataclass(frozen=True)
class Pair:
    primary: PostgresServer
    standby: PostgresServer


@dataclass(frozen=True)
class Replicated:
    """One database on the primary and, through the standby, its replica."""

    pair: Pair
    name: str

    @property
    def primary_url(self) -> str:
        return self.pair.primary.async_url(self.name)

    @property
    def replica_url(self) -> str:
        return self.pair.standby.async_url(self.name)

    def catch_up(self) -> None:
        self.pair.standby.catch_up()

    def pause(self) -> None:
        self.pair.standby.pause_replay()

    def resume(self) -> None:
        self.pair.standby.resume_replay()


@pytest.fixture(scope="session")
def replica_pair() -> Iterator[Pair]:
    primary = PostgresServer().start()
    try:
        primary.create_database(PG_TEMPLATE)
        asyncio.run(_migrate(primary.async_url(PG_TEMPLATE)))
        standby = primary.start_standby()
        try:
            yield Pair(primary, standby)
        finally:
            standby.stop()
    finally:
        primary.stop()


@pytest.fixture
def replica(replica_pair: Pair) -> Iterator[Replicated]:
    name = f"replicated_{next(_numbers)}"
    replica_pair.primary.create_database(name, template=PG_TEMPLATE)
    replica_pair.standby.catch_up()
    try:
        yield Replicated(replica_pair, name)
    finally:
        replica_pair.standby.resume_replay()
