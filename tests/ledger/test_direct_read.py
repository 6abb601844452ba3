"""The balance read on PostgreSQL goes to asyncpg directly (tokenbank.db.direct).

It must answer what SQLAlchemy's path answers, send nothing through SQLAlchemy's
execution (else the speed it exists for is silently gone), and fall back to
SQLAlchemy inside a transaction. The retry on a closed connection is checked in
tests/security/test_database_faults.py (the very next read after
``pg_terminate_backend`` succeeds).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event

from tokenbank import ManualClock, TokenService
from tokenbank.db.engine import read_transaction, write_transaction
from tokenbank.ledger.repository import reads


async def test_the_balance_read_matches_sqlalchemys_and_skips_it(
    service: TokenService, clock: ManualClock, engine_name: str
) -> None:
    await service.open_wallet("alice")
    await service.credit("alice", amount=70, operation_type="purchase")
    await service.credit(
        "alice", amount=30, operation_type="bonus", expires_at=clock() + timedelta(days=3)
    )
    await service.debit("alice", amount=5)
    engine = await service.engine()
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        direct = await service.get_balance("alice")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    async with write_transaction(engine) as conn:  # inside a transaction: SQLAlchemy's
        through_sqlalchemy = await reads.balance(conn, "alice")
    async with read_transaction(engine) as conn:
        assert await reads.balance(conn, "nobody") is None
    assert direct == through_sqlalchemy
    assert direct is not None
    assert (direct.tokens_balance, direct.paid_tokens, direct.promotional_tokens) == (95, 70, 25)
    assert direct.next_expiry_at == clock() + timedelta(days=3)
    assert direct.next_expiry_at is not None and direct.next_expiry_at.utcoffset() == timedelta(0)
    # SQLite reads through SQLAlchemy (BEGIN, SELECT); PostgreSQL sends nothing through it.
    assert len(statements) == (2 if engine_name == "sqlite" else 0), statements
