"""SQLite's triggers must not slow a wallet's writes as its history grows.

Counted in SQLite virtual-machine steps (a progress handler), not in time: writing
one more transaction for a wallet with thousands of entries must cost about what it
costs for a new wallet. A trigger whose lookup picks the wallet index scans every
entry of the wallet on each header (migration 0004 fixed one that did).
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

from tokenbank.config import Settings
from tokenbank.db.engine import create_engine
from tokenbank.db.migrate import upgrade

HISTORY_TRANSACTIONS = 2_000
NOW = "2026-01-01 00:00:00.000000"
# The raw credits start below zero, where grants hold nothing, so they move no grant
# (decision 13) and need no grant rows; the busy wallet's spent grants are written
# apart, as history of their own.
RAW_BALANCE_BEFORE = -1_000_000


def _migrated(path: Path) -> sqlite3.Connection:
    async def migrate() -> None:
        engine = create_engine(f"sqlite:///{path}", Settings())
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    return sqlite3.connect(path, isolation_level=None)


def _open_wallet(db: sqlite3.Connection, user_id: str) -> int:
    cursor = db.execute(
        "INSERT INTO wallets (user_id, balance_tokens, held_tokens, spent_tokens, status,"
        " created_at, updated_at) VALUES (?, 0, 0, 0, 'active', ?, ?)",
        (user_id, NOW, NOW),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _credit(db: sqlite3.Connection, wallet_id: int, balance_before: int) -> None:
    """One sealed credit of 1 token: the wallet leg, the system leg, then the header."""
    transaction_id = str(uuid.uuid4())
    balance_before += RAW_BALANCE_BEFORE
    db.execute(
        "INSERT INTO ledger_entries (transaction_id, wallet_id, system_account,"
        " amount_tokens, balance_before, balance_after, created_at)"
        " VALUES (?, ?, NULL, 1, ?, ?, ?), (?, NULL, 'tokens_granted', -1, NULL, NULL, ?)",
        (transaction_id, wallet_id, balance_before, balance_before + 1, NOW, transaction_id, NOW),
    )
    db.execute(
        "INSERT INTO ledger_transactions (id, wallet_id, kind, operation_type,"
        " idempotency_scope, created_at) VALUES (?, ?, 'credit', 'bonus', '', ?)",
        (transaction_id, wallet_id, NOW),
    )


def _spent_grants(db: sqlite3.Connection, wallet_id: int, count: int) -> None:
    """Grants long consumed: history that a wallet's grant checks must not read."""
    db.executemany(
        "INSERT INTO grants (wallet_id, source, category, priority, amount_tokens,"
        " remaining_tokens, created_at) VALUES (?, 'migration', 'paid', 50, 1, 0, ?)",
        [(wallet_id, NOW)] * count,
    )


def _steps_to_credit(db: sqlite3.Connection, wallet_id: int, balance_before: int) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.set_progress_handler(count, 1)
    try:
        _credit(db, wallet_id, balance_before)
    finally:
        db.set_progress_handler(None, 1)
    return steps


def test_a_long_history_does_not_slow_a_wallets_writes(tmp_path: Path) -> None:
    db = _migrated(tmp_path / "plans.db")
    try:
        busy = _open_wallet(db, "busy")
        db.execute("BEGIN")
        for balance in range(HISTORY_TRANSACTIONS):
            _credit(db, busy, balance)
        _spent_grants(db, busy, HISTORY_TRANSACTIONS)
        db.execute("COMMIT")
        fresh = _open_wallet(db, "fresh")

        fresh_steps = _steps_to_credit(db, fresh, 0)
        busy_steps = _steps_to_credit(db, busy, HISTORY_TRANSACTIONS)
    finally:
        db.close()
    # A scan of the busy wallet's entries would add thousands of steps.
    assert busy_steps < fresh_steps * 1.5 + 50, (busy_steps, fresh_steps)
