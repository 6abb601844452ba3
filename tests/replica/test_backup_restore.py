"""Backups: what docs/operations.md tells an operator to run, run.

Some activity on the primary (credits, an expiring grant that expired, deducts, a
refund, holds captured, voided and pending), then ``pg_dump --format=custom``,
``pg_restore`` into a fresh database, and the real ``tokenbank audit`` CLI on the
restored database: it passes, with every wallet's balance and held amount as before,
and the restored schema still refuses to rewrite history (its triggers came back).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg

from tests.replica.conftest import Pair
from tokenbank import ManualClock, TokenService

USERS = ("ann", "ben", "cat")
WALLET_FIGURES = "SELECT user_id, balance_tokens, held_tokens FROM wallets ORDER BY user_id"


async def _activity(url: str) -> None:
    clock = ManualClock()
    async with TokenService(url, clock=clock, welcome_bonus_tokens=0, auto_migrate=False) as tokens:
        for n, user in enumerate(USERS):
            await tokens.open_wallet(user)
            await tokens.credit(user, amount=1_000 * (n + 1), operation_type="purchase")
            await tokens.credit(
                user,
                amount=50,
                operation_type="bonus",
                category="promotional",
                expires_at=clock() + timedelta(days=1),
            )
            spent = await tokens.debit(user, amount=120 + n, description="work")
            assert spent.transaction_id is not None
            await tokens.refund(user, 20, refund_of=spent.transaction_id)
            captured = await tokens.hold(user, 40)
            assert captured.hold_id is not None
            await tokens.capture(captured.hold_id, 25)
            voided = await tokens.hold(user, 10)
            assert voided.hold_id is not None
            await tokens.void(voided.hold_id)
            assert (await tokens.hold(user, 7 + n, ttl_seconds=3_600)).success  # stays pending
        clock.advance(timedelta(days=2))
        await tokens.expire_grants()
        assert (await tokens.audit()).ok


async def _rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def _rewrite_refused(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("UPDATE ledger_entries SET amount_tokens = amount_tokens + 1")
    except asyncpg.PostgresError:
        return True
    finally:
        await connection.close()
    return False


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOKENBANK_")}
    command = [sys.executable, "-m", "tokenbank.cli", *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_restored_backup_passes_the_audit_with_the_same_balances(
    replica_pair: Pair, tmp_path: Path
) -> None:
    primary = replica_pair.primary
    primary.create_database("backed_up", template="tokenbank_template")
    primary.create_database("restored")  # empty: from template1, as `createdb` makes it
    try:
        asyncio.run(_activity(primary.async_url("backed_up")))
        dump = tmp_path / "tokenbank.dump"
        primary.dump("backed_up", dump)
        primary.restore(dump, "restored")

        audit = _cli("audit", "--database-url", primary.sync_dsn("restored"))
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "audit passed" in audit.stdout
        assert f"{len(USERS)} wallets" in audit.stdout
        before = asyncio.run(_rows(primary.sync_dsn("backed_up"), WALLET_FIGURES))
        after = asyncio.run(_rows(primary.sync_dsn("restored"), WALLET_FIGURES))
        assert after == before
        assert [row[2] for row in after] == [7, 8, 9]  # the pending holds came back too
        current = _cli("db", "current", "--database-url", primary.sync_dsn("restored"))
        assert current.returncode == 0, current.stderr
        revision, head = current.stdout.split()[1], current.stdout.split()[3]
        assert revision == head  # the schema's version came with it: no migration to run
        assert asyncio.run(_rewrite_refused(primary.sync_dsn("restored")))
    finally:
        primary.drop_database("backed_up")
        primary.drop_database("restored")
