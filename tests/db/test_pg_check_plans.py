"""PostgreSQL's statement-level checks look up each written row's header, grant and
entries by key, whatever the tables' sizes when their plans were made (migration 0015).

PL/pgSQL keeps a check's plan for the connection's life. Planned on a new, empty
ledger, the entries' sealed check read ``ledger_transactions`` whole for every
batch, and went on doing so as the table grew. Here the first writes are single
operations on a new database (the plans are made then), then a batch of hundreds;
auto_explain logs the plan of every query the checks run, and no plan may join a
ledger table or read one whole.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg

from tests.conftest import PG_TEMPLATE
from tokenbank import ManualClock, TokenService
from tokenbank.config import Settings
from tokenbank.ledger.operations import Credit, Debit, OpenWallet, Operation
from tokenbank.ledger.writer import LedgerWriter
from tokenbank.testing.postgres import PostgresServer, quote_ident

WALLETS = 300
TRANSITION_TABLES = ("new_entries", "new_movements", "new_headers")
# Plan nodes that read a table whole or match rows by joining, not by probing a key.
WHOLE_TABLE = re.compile(
    r"(Hash|Merge) (Semi |Anti |Right |Left |Full )?Join"
    r"|Seq Scan on (ledger_transactions|ledger_entries|grants|grant_movements|wallets)\b"
)


async def _database_logging_plans(server: PostgresServer) -> str:
    name = f"plans_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server.sync_dsn("postgres"))
    try:
        await connection.execute(
            f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(PG_TEMPLATE)}"
        )
        for setting, value in (
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
        ):
            await connection.execute(
                f"ALTER DATABASE {quote_ident(name)} SET {setting} = '{value}'"
            )
    finally:
        await connection.close()
    return name


def _check_plans(log: str) -> dict[str, list[str]]:
    """The logged plans of queries that read a transition table, by table."""
    plans: dict[str, list[str]] = {table: [] for table in TRANSITION_TABLES}
    for chunk in log.split("plan:")[1:]:
        plan = chunk.split("\nLOG:")[0].split("\n20")[0]  # up to the next log line
        for table in TRANSITION_TABLES:
            if f"FROM {table}" in plan:  # the checks read them; the kernel names CTEs
                plans[table].append(plan)
    return plans


async def _write_a_large_batch(url: str) -> None:
    clock = ManualClock()
    settings = Settings(database_url=url, group_commit=False)
    async with TokenService(
        settings=settings, clock=clock, welcome_bonus_tokens=0, auto_migrate=False
    ) as service:
        writer = LedgerWriter(await service.engine(), clock=clock)
        users = [f"u{number}" for number in range(WALLETS)]
        opens: list[Operation] = [OpenWallet(user_id=user) for user in users]
        credits: list[Operation] = [Credit(user_id=user, amount_tokens=100) for user in users]
        debits: list[Operation] = [Debit(user_id=user, amount_tokens=1) for user in users]
        # One at a time first: each connection plans the checks on near-empty tables.
        for operation in [*opens[:5], *credits[:5], *debits[:5]]:
            assert (await writer.apply([operation]))[0].success
        for operations in (opens[5:], credits[5:], debits[5:]):
            results = await writer.apply(operations)
            assert all(result.success for result in results)


def test_the_checks_probe_by_key_at_any_batch_size(postgres_server: PostgresServer) -> None:
    name = asyncio.run(_database_logging_plans(postgres_server))
    log_file = postgres_server.log_file
    start = log_file.stat().st_size
    asyncio.run(_write_a_large_batch(postgres_server.async_url(name)))
    with log_file.open(encoding="utf-8", errors="replace") as log:
        log.seek(start)
        plans = _check_plans(log.read())
    assert all(plans.values()), {table: len(found) for table, found in plans.items()}
    for table, found in plans.items():
        for plan in found:
            assert not WHOLE_TABLE.search(plan), f"a check of {table} plans:\n{plan}"
