"""The hold sweep locks the wallets it will change in id order, before it changes any,
as every batch does: a sweep over many wallets and a batch then never wait on each
other in a circle (the many-process crash test saw PostgreSQL abort such deadlocks)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from tokenbank import ManualClock, TokenService


async def test_the_sweep_locks_wallets_in_id_order_first(
    service: TokenService, clock: ManualClock
) -> None:
    # Opened in this order, their holds expire in the reverse order.
    for user_id in ("first", "second", "third"):
        await service.open_wallet(user_id)
        await service.credit(user_id, amount=100, operation_type="bonus")
    for seconds, user_id in ((30, "first"), (20, "second"), (10, "third")):
        assert (await service.hold(user_id, amount=5, ttl_seconds=seconds)).success
    clock.advance(60)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    engine = (await service.engine()).sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert await service.release_expired_holds() == 3
    finally:
        event.remove(engine, "before_cursor_execute", record)

    writes = [i for i, s in enumerate(statements) if s.startswith(("UPDATE", "INSERT"))]
    locks = [
        i
        for i, s in enumerate(statements)
        if s.startswith("SELECT wallets.id FROM wallets") and "ORDER BY wallets.id" in s
    ]
    assert locks and writes and locks[0] < writes[0], statements
    if service.settings.database_url.startswith("postgresql"):
        assert "FOR UPDATE" in statements[locks[0]]
    assert (await service.audit()).ok
