"""Group commit and the batch kernel change how operations are written, not what
they do: a batch gives the same outcomes and the same books as the same operations
applied one at a time without the kernel."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import PG_TEMPLATE
from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.ledger.operations import (
    CaptureHold,
    Credit,
    Debit,
    Operation,
    PlaceHold,
    Refund,
    VoidHold,
)
from tokenbank.ledger.results import LedgerResult
from tokenbank.ledger.writer import Joiner, LedgerWriter
from tokenbank.testing.postgres import PostgresServer, quote_ident

USERS = ["u0", "u1", "u2"]
UNKNOWN_USER = "ghost"

amounts = st.integers(min_value=1, max_value=60)
users = st.sampled_from([*USERS, UNKNOWN_USER])
keys = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))
# Each user starts with HOLDS_PER_USER pending holds of HELD tokens; a capture or a
# void names one by its index (hold ids are random: each run has its own).
HOLDS_PER_USER = 2
HELD = 10


@dataclass(frozen=True)
class OnHold:
    """A capture (``amount`` not None) or a void of the setup's hold ``index``."""

    index: int
    amount: int | None
    key: str | None


Step = Operation | OnHold


KINDS = ["credit", "debit", "debit", "overdraft", "hold", "refund", "capture", "capture", "void"]


@st.composite
def on_hold(draw: st.DrawFn, kind: str, key: str | None) -> OnHold:
    index = draw(st.integers(min_value=0, max_value=len(USERS) * HOLDS_PER_USER - 1))
    if kind == "void":
        return OnHold(index, None, None)
    # Keys of captures are per hold, for the same reason as per user below.
    hold_key = f"hold{index}:{key}" if key else None
    return OnHold(index, draw(st.integers(min_value=0, max_value=HELD * 3)), hold_key)


@st.composite
def operations(draw: st.DrawFn) -> Step:
    user = draw(users)
    amount = draw(amounts)
    # Keys are per user, so the outcome never depends on how users interleave.
    key = draw(keys)
    key = f"{user}:{key}" if key else None
    kind = draw(st.sampled_from(KINDS))
    if kind in ("capture", "void"):
        return draw(on_hold(kind, key))
    if kind == "credit":
        return Credit(user_id=user, amount_tokens=amount, idempotency_key=key)
    if kind in ("debit", "overdraft"):
        overdraft = kind == "overdraft"
        return Debit(
            user_id=user, amount_tokens=amount, allow_overdraft=overdraft, idempotency_key=key
        )
    if kind == "hold":
        return PlaceHold(user_id=user, amount_tokens=amount, ttl_seconds=60, idempotency_key=key)
    return Refund(user_id=user, amount_tokens=amount, idempotency_key=key)


def outcome(result: Any) -> tuple[Any, ...]:
    return (
        result.success,
        result.error_code,
        getattr(result, "new_balance", None),
        getattr(result, "replayed", False),
        getattr(result, "available_tokens", None) if result.success else None,
        getattr(result, "status", None),
        getattr(result, "captured_tokens", None),
    )


def resolved(step: Step, hold_ids: list[str]) -> Operation:
    if not isinstance(step, OnHold):
        return step
    hold_id = hold_ids[step.index]
    if step.amount is None:
        return VoidHold(hold_id=hold_id)
    return CaptureHold(hold_id=hold_id, amount_tokens=step.amount, idempotency_key=step.key)


async def run(url: str, steps: list[Step], *, batched: bool) -> tuple[list[Any], Any]:
    clock = ManualClock()
    settings_ = Settings(database_url=url, group_commit=False)
    async with TokenService(
        settings=settings_, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        hold_ids = []
        for user in USERS:
            await service.open_wallet(user)
            await service.credit(user, amount=100)
            for _ in range(HOLDS_PER_USER):
                hold = await service.hold(user, HELD, ttl_seconds=60)
                assert hold.hold_id is not None
                hold_ids.append(hold.hold_id)
        ops = [resolved(step, hold_ids) for step in steps]
        writer = LedgerWriter(await service.engine(), clock=clock, batch_kernel=batched)
        if batched:
            results = await writer.apply(ops)
        else:
            results = [(await writer.apply([op]))[0] for op in ops]
        balances = [await service.get_balance(user) for user in USERS]
        report = await service.audit()
    assert report.ok, report.problems
    books = [(b.tokens_balance, b.held, b.tokens_spent, b.status) for b in balances if b]
    return [outcome(r) for r in results], books


def fresh_database(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if engine_name == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"gc_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        connection = await asyncpg.connect(server.sync_dsn("postgres"))
        try:
            await connection.execute(
                f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(PG_TEMPLATE)}"
            )
        finally:
            await connection.close()

    asyncio.run(create())
    return server.async_url(name)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_batch_equals_the_same_operations_one_at_a_time(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    examples = 40 if engine == "sqlite" else 15

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ops=st.lists(operations(), min_size=1, max_size=30))
    def check(ops: list[Step]) -> None:
        batched = asyncio.run(run(fresh_database(engine, request, tmp_path), ops, batched=True))
        single = asyncio.run(run(fresh_database(engine, request, tmp_path), ops, batched=False))
        assert batched == single

    check()


async def test_group_commit_coalesces_concurrent_debits(database_url: str) -> None:
    settings_ = Settings(database_url=database_url, group_commit=True, db_pool_size=4)
    async with TokenService(
        settings=settings_, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        await service.open_wallet("hot")
        await service.credit("hot", amount=150)
        writer = service._writer
        assert writer is not None
        batches: list[int] = []
        original = writer.apply

        async def counting(
            operations: Sequence[Operation],
            *,
            connection: AsyncConnection | None = None,
            join: Joiner | None = None,
        ) -> list[LedgerResult]:
            batches.append(len(operations))
            return await original(operations, connection=connection, join=join)

        writer.apply = counting  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(service.debit("hot", amount=1, idempotency_key=f"d{n % 180}") for n in range(200))
        )
        # d0..d19 are each sent twice: the second answers like the first.
        assert sum(r.success and not r.replayed for r in results) == 150
        assert sum(r.replayed for r in results) == 20
        assert len(batches) < 200 / 4, batches  # coalesced, not one commit per debit
        balance = await service.get_balance("hot")
        assert balance is not None
        assert balance.tokens_balance == 0
        assert (await service.audit()).ok
